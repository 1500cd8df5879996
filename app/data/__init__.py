"""Raw text to batches: corpus sources and splits, subword tokenizers, the tf.data pipeline."""

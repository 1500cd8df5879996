"""Reserved token ids, the same in both languages and in every module that meets token ids.

The SentencePiece models are trained with these ids (`app/data/tokenizer.py`), the tf.data
pipeline adds the markers, the models derive their masks from padding, and the searches start
and stop with them; `translate_ids` callers must use them too (see docs/ARCHITECTURE.md).
"""

PAD_ID = 0  # padding: every mask in the model is `ids != PAD_ID`
START_ID = 1  # first decoder input of every target
END_ID = 2  # ends every source and every target
UNKNOWN_ID = 3  # never produced with byte fallback, reserved all the same
FIRST_PIECE_ID = UNKNOWN_ID + 1  # the first id of an ordinary subword piece
END_PIECE = "</s>"  # the end id's piece string, shown in attention plots

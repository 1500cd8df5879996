"""The export's op contract: every op in every function of the SavedModel is a core TensorFlow op
or a tensorflow-text one (what any TF Serving that links TF Text can load), the latter listed in the
model card; and the string ops are pinned to the CPU, so a GPU server keeps only the search there."""

from __future__ import annotations

import json

import pytest
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2
from tensorflow.core.protobuf import saved_model_pb2

from app.export import checked_required_ops, op_contract_violations, op_registry, saved_model_ops

SIGNATURES = ("serving_default", "translate_with_attention", "translate_nbest", "translate_ids")
# String ops of the tokenizers (tensorflow-text's, and core ones on strings): CPU kernels only.
STRING_OPS = {"UnicodeTranscode", "RegexReplace", "StringStrip"}


@pytest.fixture(scope="module")
def registry() -> tuple[set[str], set[str]]:
    return op_registry()


def fake_export(directory, ops_in_graph: list[str], ops_in_function: list[str]):
    """A saved_model.pb holding a graph and one library function, called from the graph."""
    function = function_pb2.FunctionDef(
        signature={"name": "__inference_tokenize_1"},
        node_def=[node_def_pb2.NodeDef(name=f"n{i}", op=op) for i, op in enumerate(ops_in_function)],
    )
    graph = graph_pb2.GraphDef(
        node=[node_def_pb2.NodeDef(name=f"g{i}", op=op) for i, op in enumerate(ops_in_graph)]
        + [node_def_pb2.NodeDef(name="call", op="__inference_tokenize_1")],
        library=function_pb2.FunctionDefLibrary(function=[function]),
    )
    saved_model = saved_model_pb2.SavedModel()
    saved_model.meta_graphs.add().graph_def.CopyFrom(graph)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    return directory


def test_the_checker_finds_an_op_that_is_neither_core_nor_tensorflow_text(tmp_path, registry):
    core, text = registry
    assert {"MatMul", "StatefulPartitionedCall"} <= core and "SentencepieceTokenizeOp" in text
    export = fake_export(
        tmp_path / "fake", ["Const", "MatMul"], ["SentencepieceTokenizeOp", "MysteryCustomOp"]
    )
    ops = saved_model_ops(export)
    assert ops == {"Const", "MatMul", "SentencepieceTokenizeOp", "MysteryCustomOp"}  # the call is no op
    assert op_contract_violations(ops, core, text) == ["MysteryCustomOp"]
    with pytest.raises(
        ValueError, match=r"neither TensorFlow nor tensorflow-text registers: \['MysteryCustomOp'\]"
    ):
        checked_required_ops(export)
    clean = fake_export(tmp_path / "clean", ["Const"], ["SentencepieceTokenizeOp"])
    assert checked_required_ops(clean) == ["SentencepieceTokenizeOp"]


def test_every_op_of_the_export_is_core_tensorflow_or_tensorflow_text_and_the_card_lists_the_latter(
    trained_run, registry
):
    core, text = registry
    export = trained_run / "export"
    ops = saved_model_ops(export)
    assert len(ops) > 50  # the functions' bodies were read, not only the graph's call nodes
    assert op_contract_violations(ops, core, text) == []
    card = json.loads((export / "model_card.json").read_text())
    assert card["export"]["required_ops"] == sorted(ops & text)
    assert "SentencepieceDetokenizeOp" in card["export"]["required_ops"]


def test_the_tokenizers_string_ops_are_pinned_to_the_cpu(trained_run, registry):
    _, text = registry
    graph = saved_model_pb2.SavedModel.FromString((trained_run / "export" / "saved_model.pb").read_bytes())
    graph = graph.meta_graphs[0]
    functions = {function.signature.name: function for function in graph.graph_def.library.function}
    for signature in SIGNATURES:
        nodes = [node for name in reachable(graph, signature, functions) for node in functions[name].node_def]
        strings = [node for node in nodes if node.op in text | STRING_OPS]
        if signature != "translate_ids":  # ids in, ids out: no strings at all
            assert {"SentencepieceTokenizeOp", "SentencepieceDetokenizeOp"} & {node.op for node in strings}
        unpinned = sorted(
            {f"{node.op} ({node.device or 'no device'})" for node in strings if "CPU:0" not in node.device}
        )
        assert not unpinned, f"{signature}: string ops not pinned to the CPU: {unpinned}"


def reachable(graph, signature: str, functions: dict) -> set[str]:
    """The library functions a signature's outputs call, directly or through other functions."""
    outputs = {info.name.split(":")[0] for info in graph.signature_def[signature].outputs.values()}
    pending = [
        called for node in graph.graph_def.node if node.name in outputs for called in _calls(node, functions)
    ]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += [called for node in functions[name].node_def for called in _calls(node, functions)]
    return seen


def _calls(node, functions: dict) -> list[str]:
    names = [node.op] if node.op in functions else []
    for value in node.attr.values():
        names += [value.func.name] if value.func.name else []
        names += [function.name for function in value.list.func]
    return [name for name in names if name in functions]

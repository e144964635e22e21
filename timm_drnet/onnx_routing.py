""" One ONNX graph that routes one image

``OnnxDRNet`` routes a batch in Python, one onnxruntime session per graph. For a single image the whole routed
forward fits in one graph: the predictor's argmax, or the cascade's confidence test, picks an ``If`` branch, and
each branch holds one resolution's backbone graph. One call runs it, with no numpy between graphs and one
session's threads, and any ONNX runtime deploys it without our Python (C++, mobile, the web).
"""
from typing import Any, List, Optional, Sequence

import numpy as np

from .routing import Cascade

__all__ = ['single_image_graph']


def _branch(model: Any, prefix: str) -> Any:
    """``model``'s graph as an ``If`` branch (or to inline): every name prefixed, its ``images`` input read from the
    enclosing graph."""
    from onnx.compose import add_prefix_graph
    graph = add_prefix_graph(model.graph, prefix, rename_inputs=False)
    del graph.input[:]
    return graph


def _constant(name: str, values: Sequence[float], dtype: str = 'INT64') -> Any:
    """A ``Constant`` node whose output ``name`` is the 1-D tensor ``values`` of onnx type ``dtype``."""
    from onnx import TensorProto, helper
    return helper.make_node('Constant', [], [name], value=helper.make_tensor(
        name, getattr(TensorProto, dtype), [len(values)], list(values)))


def _choose(backbones: Sequence[Any], k: int, num_classes: int) -> Any:
    """A graph whose output is the logits of the backbone ``resolution_index`` names, one of k, k + 1, ...: nested
    ``If`` on the ``is_resolution{k}`` flags the main graph computes."""
    from onnx import TensorProto, helper
    branch = _branch(backbones[k], f'resolution{k}/')
    if k == len(backbones) - 1:
        return branch
    out = f'resolution{k}/chosen'
    node = helper.make_node('If', [f'is_resolution{k}'], [out], then_branch=branch,
                            else_branch=_choose(backbones, k + 1, num_classes))
    return helper.make_graph([node], f'choose{k}', [], [helper.make_tensor_value_info(
        out, TensorProto.FLOAT, [1, num_classes])])


def _level(backbones: Sequence[Any], levels: Sequence[int], k: int, num_classes: int) -> Any:
    """A graph whose outputs are (logits, resolution index) of cascade level ``k`` and those after it: the level's
    backbone, then, unless it is the last, an ``If`` that stops when the top class probability reaches the
    ``threshold`` constant of the main graph."""
    from onnx import TensorProto, helper
    branch = _branch(backbones[levels[k]], f'level{k}/')
    logits, index = branch.output[0].name, f'level{k}/index'
    nodes = list(branch.node) + [_constant(index, [levels[k]])]
    outputs = [logits, index]
    if k < len(levels) - 1:
        top, stop = f'level{k}/top_probability', f'level{k}/stop'
        nodes += [
            helper.make_node('Softmax', [logits], [f'level{k}/probabilities'], axis=1),
            _constant(f'level{k}/one', [1]),
            helper.make_node('TopK', [f'level{k}/probabilities', f'level{k}/one'], [top, f'level{k}/top_class'],
                             axis=1),
            helper.make_node('GreaterOrEqual', [top, 'threshold'], [stop]),
        ]
        stopped = helper.make_graph(
            [helper.make_node('Identity', [logits], [f'level{k}/stop_logits']),
             helper.make_node('Identity', [index], [f'level{k}/stop_index'])], f'stop{k}', [],
            [helper.make_tensor_value_info(f'level{k}/stop_logits', TensorProto.FLOAT, [1, num_classes]),
             helper.make_tensor_value_info(f'level{k}/stop_index', TensorProto.INT64, [1])])
        outputs = [f'level{k}/answer_logits', f'level{k}/answer_index']
        nodes.append(helper.make_node('If', [stop], outputs, then_branch=stopped,
                                      else_branch=_level(backbones, levels, k + 1, num_classes)))
    return helper.make_graph(nodes, f'level{k}', [], [
        helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [1, num_classes]),
        helper.make_tensor_value_info(outputs[1], TensorProto.INT64, [1])], initializer=list(branch.initializer))


def single_image_graph(
        predictor: Any,
        backbones: Sequence[Any],
        input_size: Sequence[int],
        num_classes: int,
        cascade: Optional[Cascade] = None,
        predictor_trained: bool = True,
) -> Any:
    """ One ONNX model that routes one image (``images`` shaped (1, C, H, W)) through the ``export_onnx`` graphs
    ``predictor`` and ``backbones`` (onnx ``ModelProto``), as ``OnnxDRNet.forward_routed`` does.

    Outputs ``logits`` (1, num_classes), ``resolution_index`` (1,) and ``scores`` (1, m): the predictor's scores, or
    one-hot under a ``cascade``, whose levels and threshold are constants of the graph (a threshold the caller can
    feed would be a graph input, which onnxruntime's optimiser may not fold). An untrained predictor sends the image
    to the full resolution.
    """
    from onnx import TensorProto, helper, numpy_helper
    m = len(backbones)
    inputs = [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, *input_size])]
    nodes: List[Any] = []
    initializers: List[Any] = []

    def inline(graph: Any, names: Sequence[str]) -> None:  # graph's nodes in the main graph, outputs renamed
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        nodes.extend(helper.make_node('Identity', [o.name], [name]) for o, name in zip(graph.output, names))

    if cascade is not None:
        initializers.append(numpy_helper.from_array(np.array(cascade.threshold, np.float32), 'threshold'))
        inline(_level(backbones, cascade.levels, 0, num_classes), ['logits', 'resolution_index'])
    elif not predictor_trained:
        inline(_branch(backbones[0], 'resolution0/'), ['logits'])
        nodes.append(_constant('resolution_index', [0]))
    else:
        inline(_branch(predictor, 'predictor/'), ['scores'])
        nodes.append(helper.make_node('ArgMax', ['scores'], ['resolution_index'], axis=1, keepdims=0))
        for k in range(m - 1):
            nodes += [_constant(f'resolution{k}/id', [k]),
                      helper.make_node('Equal', ['resolution_index', f'resolution{k}/id'], [f'is_resolution{k}'])]
        inline(_choose(backbones, 0, num_classes), ['logits'])
    if cascade is not None or not predictor_trained:  # the scores a cascade reports: one-hot of the answer
        nodes += [_constant('one_hot/depth', [m]), _constant('one_hot/values', [0., 1.], 'FLOAT'),
                  helper.make_node('OneHot', ['resolution_index', 'one_hot/depth', 'one_hot/values'], ['scores'],
                                   axis=-1)]
    graph = helper.make_graph(nodes, 'drnet_single_image', inputs, [
        helper.make_tensor_value_info('logits', TensorProto.FLOAT, [1, num_classes]),
        helper.make_tensor_value_info('resolution_index', TensorProto.INT64, [1]),
        helper.make_tensor_value_info('scores', TensorProto.FLOAT, [1, m])], initializers)
    model = helper.make_model(graph, opset_imports=list(backbones[0].opset_import),
                              producer_name=backbones[0].producer_name)
    model.ir_version = backbones[0].ir_version
    return model

"""The CPU's float32 matmuls of a training step, MKL (torch's F.linear and `@`) against oneDNN (what
xlm/model/linear.py calls): the forward, the input's gradient and the weight's gradient of the linear
layers of an MLM step (4 x 256 model, 32 x 128 tokens, 8,000 words), and what oneDNN's first call on a new
shape costs (the kernel it builds: a layer of 256 x 1,024 on 3,000-3,009 rows), and the weight gradient's
two orders, grad^T @ x and (x^T @ grad)^T, for which `_weight_gradient` chooses (the same bits either way);
and decoding's matmuls (beam 5 and greedy on 32 sentences, a 4 x 256 model, 8,000 words) by F.linear
against xlm's `linear` without gradient, oneDNN in MKL's order on packed weights (`mkl_k_blocks`: the same
bits as F.linear), whatever the CPU (XLM_ONEDNN=1: the measure of whether xlm should choose it there;
`onednn_chosen` says what xlm chooses on this CPU by default). Prints one JSON object.

    python -m bench.cpu_matmul [--threads 1] [--repeats 20]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from bench.data_pipeline import cpu_model
from torch import nn

from xlm.model import linear as linear_module
from xlm.model.linear import WIDE_OUTPUT, _onednn_linear, has_onednn, linear, mkl_order_blocks, weights_packed

# (rows, out, in) of the weight gradient's orders: the vocabulary's (toy 2 x 128 and 4 x 256 models, a
# translation step's target rows and 4,096) and hidden layers' both ways round
ORDER_SHAPES = [(rows, d_out, d_in) for rows in (960, 4096)
                for d_out, d_in in ((8056, 128), (8000, 256), (1024, 256), (512, 128), (256, 256), (256, 1024))]
# (rows, in, out): q/k/v together, the FFN's two layers, the attention's output, the output layer (15% of rows)
SHAPES = [(4096, 256, 768), (4096, 256, 1024), (4096, 1024, 256), (4096, 256, 256), (616, 256, 8000)]
# (rows, in, out) of decoding: beam 5 (160 rows) and greedy (32), the FFN's, attention's and output layers
DECODING_SHAPES = [(rows, d_in, d_out) for rows in (160, 32)
                   for d_in, d_out in ((256, 256), (256, 1024), (1024, 256), (256, 8000))]


def seconds(fn, repeats):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not has_onednn():
        sys.exit("this torch has no oneDNN")
    chosen = linear_module.onednn_chosen()
    os.environ["XLM_ONEDNN"] = "1"
    linear_module.onednn_chosen.cache_clear()
    torch.set_num_threads(args.threads)
    rows = []
    for n, d_in, d_out in SHAPES:
        x, w, g = torch.randn(n, d_in), torch.randn(d_out, d_in), torch.randn(n, d_out)
        flops = 2 * n * d_in * d_out
        cases = {"forward": (lambda: F.linear(x, w), lambda: _onednn_linear(x, w)),
                 "input_grad": (lambda: g @ w, lambda: _onednn_linear(g, w.t())),
                 "weight_grad": (lambda: g.t() @ x, lambda: _onednn_linear(g.t(), x.t()))}
        for name, (mkl, onednn) in cases.items():
            t_mkl, t_onednn = seconds(mkl, args.repeats), seconds(onednn, args.repeats)
            rows.append({"shape": [n, d_in, d_out], "matmul": name, "mkl_gflops": round(flops / t_mkl / 1e9, 1),
                         "onednn_gflops": round(flops / t_onednn / 1e9, 1), "speedup": round(t_mkl / t_onednn, 2)})
    orders = []
    for n, d_out, d_in in ORDER_SHAPES:
        g, x = torch.randn(n, d_out), torch.randn(n, d_in)
        direct = seconds(lambda: _onednn_linear(g.t(), x.t()), args.repeats)
        swapped = seconds(lambda: _onednn_linear(x.t(), g.t()).t().contiguous(), args.repeats)
        orders.append({"rows": n, "weight": [d_out, d_in], "direct_ms": round(1000 * direct, 2),
                       "swapped_ms": round(1000 * swapped, 2), "swapped_speedup": round(direct / swapped, 2),
                       "bit_identical": torch.equal(_onednn_linear(g.t(), x.t()), _onednn_linear(x.t(), g.t()).t()),
                       "xlm_uses": "swapped" if d_out >= WIDE_OUTPUT * d_in else "direct"})
    decoding = []
    with torch.no_grad(), weights_packed():
        for n, d_in, d_out in DECODING_SHAPES:
            x, w, b = torch.randn(n, d_in), nn.Parameter(torch.randn(d_out, d_in)), torch.randn(d_out)
            mkl, ours = seconds(lambda: F.linear(x, w, b), args.repeats), seconds(lambda: linear(x, w, b), args.repeats)
            same = torch.equal(linear(x, w, b), F.linear(x, w, b))
            decoding.append({"shape": [n, d_in, d_out], "blocks": mkl_order_blocks(x, w),
                             "mkl_ms": round(1000 * mkl, 3), "xlm_ms": round(1000 * ours, 3),
                             "speedup": round(mkl / ours, 2), "bit_identical": same})
    # a new shape: oneDNN builds its kernel at the first call
    w, b, firsts = torch.randn(1024, 256), torch.randn(1024), []
    for i in range(10):
        x = torch.randn(3000 + i, 256)
        start = time.perf_counter()
        _onednn_linear(x, w, b)
        firsts.append(time.perf_counter() - start)
    again = seconds(lambda: _onednn_linear(x, w, b), args.repeats)
    result = {"benchmark": "cpu_matmul", "command": "python -m bench.cpu_matmul " + " ".join(sys.argv[1:]),
              "device_name": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "xlm_chooses_onednn": chosen, "torch": torch.__version__, "threads": args.threads, "matmuls": rows,
              "weight_gradient_orders": orders, "decoding_in_mkl_order": decoding,
              "onednn_new_shape_ms": round(1000 * sorted(firsts)[len(firsts) // 2], 2),
              "onednn_known_shape_ms": round(1000 * again, 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

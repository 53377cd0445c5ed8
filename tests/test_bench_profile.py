"""The bench's grouping of CUDA kernels into families, on kernel names an H200 profile of an MLM step gave
(bench/results/h200_2026-12-04)."""
import pytest

from bench.steps import kernel_family


@pytest.mark.parametrize("name, family", [
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_bias_TNT", "matmul"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4>>",
     "optimizer"),
    ("void at::native::(anonymous namespace)::GammaBetaBackwardCUDAKernelTemplate<float, float, 32u>", "layer_norm"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>",
     "copy_or_cast"),
    ("void at::native::reduce_kernel<128, 4, at::native::ReduceOp<c10::BFloat16, at::native::func_wrapper_t<"
     "c10::BFloat16, at::native::sum_functor<c10::BFloat16, float, c10::BFloat16>>>>", "reduction"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "other_elementwise"),
])
def test_kernel_family(name, family):
    assert kernel_family(name) == family

//! CUDA kernels of the depthwise convolution (f32, NCHW), from `depthwise.cu`.
//!
//! The source is compiled once per process by NVRTC, for the device it runs on, so building
//! this crate needs no CUDA compiler of its own (candle's `cuda` feature already needs one).

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout};

use super::cpu::Geometry;

const SOURCE: &str = include_str!("depthwise.cu");
const MODULE: &str = "xray_models_depthwise";
/// Threads per block; the weight gradient's reduction needs a multiple of 32.
const THREADS: u32 = 256;

/// The kernels' `Geometry` argument, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelGeometry {
    batch: i32,
    channels: i32,
    in_h: i32,
    in_w: i32,
    out_h: i32,
    out_w: i32,
    kernel: i32,
    stride: i32,
    padding: i32,
}

// SAFETY: plain `repr(C)` integers, laid out as the kernel's struct.
unsafe impl DeviceRepr for KernelGeometry {}

impl KernelGeometry {
    fn new(g: &Geometry) -> candle_core::Result<Self> {
        let int = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| {
                candle_core::Error::Msg(format!(
                    "depthwise_conv2d on CUDA: {what} {v} does not fit the kernel's 32-bit indices"
                ))
            })
        };
        // The kernels index with 32-bit integers (64-bit division is slow on a GPU), with
        // headroom for a grid-stride step past the end.
        let largest = g.batch * g.channels * (g.in_h * g.in_w).max(g.out_h() * g.out_w());
        if largest > i32::MAX as usize / 2 {
            return Err(candle_core::Error::Msg(format!(
                "depthwise_conv2d on CUDA: {largest} elements per tensor exceed the kernels' \
                 32-bit indices; split the batch"
            )));
        }
        Ok(Self {
            batch: int(g.batch, "batch")?,
            channels: int(g.channels, "channels")?,
            in_h: int(g.in_h, "height")?,
            in_w: int(g.in_w, "width")?,
            out_h: int(g.out_h(), "output height")?,
            out_w: int(g.out_w(), "output width")?,
            kernel: int(g.kernel, "kernel")?,
            stride: int(g.stride, "stride")?,
            padding: int(g.padding, "padding")?,
        })
    }
}

fn ptx() -> candle_core::Result<&'static str> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        nvrtc::compile_ptx(SOURCE)
            .map(|ptx| ptx.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| {
        candle_core::Error::Msg(format!(
            "depthwise_conv2d: NVRTC could not compile the CUDA kernels: {e}"
        ))
    })
}

/// Launches `name` over `(a, b) -> out` with `blocks` blocks of [`THREADS`].
fn launch(
    name: &str,
    (a, la): (&CudaStorage, &Layout),
    (b, lb): (&CudaStorage, &Layout),
    out_len: usize,
    blocks: usize,
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let device: &CudaDevice = a.device();
    let a = a.as_cuda_slice::<f32>()?.slice(la.start_offset()..);
    let b = b.as_cuda_slice::<f32>()?.slice(lb.start_offset()..);
    let geometry = KernelGeometry::new(g)?;
    // SAFETY: every kernel writes each of the `out_len` elements.
    let out = unsafe { device.alloc::<f32>(out_len)? };
    let func = device.get_or_load_custom_func(name, MODULE, ptx()?)?;
    let blocks = u32::try_from(blocks.max(1))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "depthwise_conv2d on CUDA: {blocks} blocks for {name}"
            ))
        })?;
    let config = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = func.builder();
    builder.arg(&a);
    builder.arg(&b);
    builder.arg(&out);
    builder.arg(&geometry);
    // SAFETY: the arguments match the kernel's signature; the slices are contiguous f32 of the
    // shapes `g` describes (checked by the callers' layouts).
    unsafe { builder.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// Blocks for a grid-stride loop over `len` elements.
fn elementwise_blocks(len: usize) -> usize {
    len.div_ceil(THREADS as usize).min(65_535 * 16)
}

/// `(x, weight) -> y`.
pub(super) fn forward(
    x: (&CudaStorage, &Layout),
    weight: (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let len = g.batch * g.channels * g.out_h() * g.out_w();
    launch(
        "depthwise_forward",
        x,
        weight,
        len,
        elementwise_blocks(len),
        g,
    )
}

/// `(grad_out, weight) -> grad_x`.
pub(super) fn input_grad(
    grad_out: (&CudaStorage, &Layout),
    weight: (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let len = g.batch * g.channels * g.in_h * g.in_w;
    launch(
        "depthwise_input_grad",
        grad_out,
        weight,
        len,
        elementwise_blocks(len),
        g,
    )
}

/// `(x, grad_out) -> grad_weight`: one block per channel and tap.
pub(super) fn weight_grad(
    x: (&CudaStorage, &Layout),
    grad_out: (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let len = g.channels * g.kernel * g.kernel;
    launch("depthwise_weight_grad", x, grad_out, len, len, g)
}

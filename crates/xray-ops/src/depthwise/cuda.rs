//! CUDA kernels of the depthwise convolution (f32, NCHW), from `depthwise.cu`.
//!
//! The source is compiled once per process by NVRTC, for the device it runs on, so building
//! this crate needs no CUDA compiler of its own (candle's `cuda` feature already needs one).

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
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
        // headroom for a grid-stride step past the end. The weight gradient's per-image sums
        // hold batch x channels x K x K numbers.
        let per_plane = (g.in_h * g.in_w)
            .max(g.out_h() * g.out_w())
            .max(g.kernel * g.kernel);
        let largest = g.batch * g.channels * per_plane;
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

/// The contiguous f32 data of `storage` from `layout`'s offset.
fn view<'a>(storage: &'a CudaStorage, layout: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
    Ok(storage
        .as_cuda_slice::<f32>()?
        .slice(layout.start_offset()..))
}

/// Launches `name(inputs..., out, geometry)` on a `grid` of blocks of [`THREADS`], into a new
/// buffer of `out_len` elements.
fn launch(
    device: &CudaDevice,
    name: &str,
    inputs: &[&CudaView<'_, f32>],
    out_len: usize,
    grid: (usize, usize),
    g: &Geometry,
) -> candle_core::Result<CudaSlice<f32>> {
    let geometry = KernelGeometry::new(g)?;
    let dim = |blocks: usize, limit: u32| {
        u32::try_from(blocks.max(1))
            .ok()
            .filter(|&b| b <= limit)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "depthwise_conv2d on CUDA: {blocks} blocks for {name}"
                ))
            })
    };
    let config = LaunchConfig {
        grid_dim: (dim(grid.0, i32::MAX as u32)?, dim(grid.1, 65_535)?, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: every kernel writes each of the `out_len` elements.
    let out = unsafe { device.alloc::<f32>(out_len)? };
    let func = device.get_or_load_custom_func(name, MODULE, ptx()?)?;
    let mut builder = func.builder();
    for input in inputs {
        builder.arg(*input);
    }
    builder.arg(&out);
    builder.arg(&geometry);
    // SAFETY: the arguments match the kernel's signature; the inputs are contiguous f32 of the
    // shapes `g` describes (checked by the callers' layouts).
    unsafe { builder.launch(config) }.w()?;
    Ok(out)
}

/// Blocks for a grid-stride loop over `len` elements.
fn elementwise_blocks(len: usize) -> (usize, usize) {
    (len.div_ceil(THREADS as usize).min(65_535 * 16), 1)
}

/// `(x, weight) -> y`.
pub(super) fn forward(
    (x, lx): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let len = g.batch * g.channels * g.out_h() * g.out_w();
    let device = x.device();
    let inputs = [&view(x, lx)?, &view(w, lw)?];
    let out = launch(
        device,
        "depthwise_forward",
        &inputs,
        len,
        elementwise_blocks(len),
        g,
    )?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// `(grad_out, weight) -> grad_x`.
pub(super) fn input_grad(
    (go, lgo): (&CudaStorage, &Layout),
    (w, lw): (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let len = g.batch * g.channels * g.in_h * g.in_w;
    let device = go.device();
    let inputs = [&view(go, lgo)?, &view(w, lw)?];
    let out = launch(
        device,
        "depthwise_input_grad",
        &inputs,
        len,
        elementwise_blocks(len),
        g,
    )?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// `(x, grad_out) -> grad_weight`. Kernels of size 1, 3 and 5 read each plane once and sum per
/// image, then over images; other sizes take one block per (channel, tap).
pub(super) fn weight_grad(
    (x, lx): (&CudaStorage, &Layout),
    (go, lgo): (&CudaStorage, &Layout),
    g: &Geometry,
) -> candle_core::Result<CudaStorage> {
    let device = x.device();
    let len = g.channels * g.kernel * g.kernel;
    let inputs = [&view(x, lx)?, &view(go, lgo)?];
    let per_image = match g.kernel {
        1 => Some("depthwise_weight_grad_k1"),
        3 => Some("depthwise_weight_grad_k3"),
        5 => Some("depthwise_weight_grad_k5"),
        _ => None,
    };
    let out = match per_image {
        Some(name) => {
            let grid = (g.channels, g.batch);
            let partial = launch(device, name, &inputs, g.batch * len, grid, g)?;
            let blocks = (len.div_ceil(THREADS as usize), 1);
            let partial = partial.slice(..);
            launch(
                device,
                "depthwise_weight_grad_images",
                &[&partial],
                len,
                blocks,
                g,
            )?
        }
        None => launch(device, "depthwise_weight_grad", &inputs, len, (len, 1), g)?,
    };
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

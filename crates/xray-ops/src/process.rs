//! Process-wide allocator settings for programs that run these ops: a binary calls them once at
//! start; the libraries never do.

use candle_core::Device;

/// Makes glibc keep freed memory for reuse instead of returning every large block to the kernel.
///
/// Tensors are large, short-lived allocations; by default glibc serves each from a fresh `mmap`
/// whose pages fault in again, which here made inference 4x slower (system time above user
/// time). Call it first thing in `main`. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any threads
    // start and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // -1: never trim (mallopt(3)).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        // Worker threads would otherwise get arenas of their own, whose heaps glibc unmaps
        // whenever they fall empty, whatever the trim threshold: their pages then fault in
        // again at the next step.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Makes the CUDA driver keep memory freed on `device` in its pool for reuse; does nothing on
/// other devices (or without the `cuda` feature).
///
/// candle allocates through the driver's stream-ordered pool, which by default hands freed
/// memory back at every synchronisation, so each step maps its tensors' memory again. On an
/// H200 this made a 58 MB element-wise kernel 4-5x slower than the memory allows (measured in
/// `docs/performance-notes.md`). Call it for the CUDA device a program opens.
pub fn keep_freed_device_memory(device: &Device) -> candle_core::Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = cuda.cuda_stream();
        let context = stream.context();
        if !context.has_async_alloc() {
            return Ok(());
        }
        let failed = |what: &str, e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Msg(format!("keep_freed_device_memory: {what}: {e}"))
        };
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut keep_all = u64::MAX;
        // SAFETY: plain driver calls on a device the context holds; `pool` and `keep_all` are
        // valid for the duration of each call, and the attribute takes a u64.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device())
                .result()
                .map_err(|e| failed("default memory pool", e))?;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep_all as *mut u64).cast(),
            )
            .result()
            .map_err(|e| failed("release threshold", e))?;
        }
    }
    let _ = device;
    Ok(())
}

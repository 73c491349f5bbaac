// Depthwise 2-D convolution of NCHW f32 tensors on CUDA: one K x K filter per channel, the same
// padding on every side, any stride, dilation 1. Compiled at run time by NVRTC (see cuda.rs).
//
// Every kernel writes each output element exactly once, with no atomics, so results are the
// same from run to run.

struct Geometry {
    int batch, channels, in_h, in_w, out_h, out_w, kernel, stride, padding;
};

// One thread per output pixel (grid-stride loop). Indices are 32-bit (the host checks that every
// tensor has fewer than 2^31 elements): 64-bit division is many times slower on the GPU.
extern "C" __global__ void depthwise_forward(const float* __restrict__ x,
                                             const float* __restrict__ weight,
                                             float* __restrict__ y, Geometry g) {
    const int out_plane = g.out_h * g.out_w;
    const int total = g.batch * g.channels * out_plane;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        const int plane = i / out_plane;  // n * channels + c
        const int p = i - plane * out_plane;
        const int oy = p / g.out_w;
        const int ox = p - oy * g.out_w;
        const float* in = x + plane * (g.in_h * g.in_w);
        const float* filter = weight + (plane % g.channels) * (g.kernel * g.kernel);
        const int y0 = oy * g.stride - g.padding;
        const int x0 = ox * g.stride - g.padding;
        float acc = 0.0f;
        for (int ky = 0; ky < g.kernel; ++ky) {
            const int iy = y0 + ky;
            if (iy < 0 || iy >= g.in_h) continue;
            for (int kx = 0; kx < g.kernel; ++kx) {
                const int ix = x0 + kx;
                if (ix < 0 || ix >= g.in_w) continue;
                acc = fmaf(in[iy * g.in_w + ix], filter[ky * g.kernel + kx], acc);
            }
        }
        y[i] = acc;
    }
}

// One thread per input pixel: gathers the output gradients of the windows that read it.
extern "C" __global__ void depthwise_input_grad(const float* __restrict__ grad_out,
                                                const float* __restrict__ weight,
                                                float* __restrict__ grad_in, Geometry g) {
    const int in_plane = g.in_h * g.in_w;
    const int total = g.batch * g.channels * in_plane;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
        const int plane = i / in_plane;
        const int p = i - plane * in_plane;
        const int iy = p / g.in_w;
        const int ix = p - iy * g.in_w;
        const float* go = grad_out + plane * (g.out_h * g.out_w);
        const float* filter = weight + (plane % g.channels) * (g.kernel * g.kernel);
        float acc = 0.0f;
        for (int ky = 0; ky < g.kernel; ++ky) {
            const int ny = iy + g.padding - ky;  // oy * stride, if this tap reads (iy, ix)
            if (ny < 0) break;
            const int oy = ny / g.stride;
            if (oy * g.stride != ny || oy >= g.out_h) continue;
            for (int kx = 0; kx < g.kernel; ++kx) {
                const int nx = ix + g.padding - kx;
                if (nx < 0) break;
                const int ox = nx / g.stride;
                if (ox * g.stride != nx || ox >= g.out_w) continue;
                acc = fmaf(go[oy * g.out_w + ox], filter[ky * g.kernel + kx], acc);
            }
        }
        grad_in[i] = acc;
    }
}

// Weight gradient for any kernel size: one block per (channel, tap) sums that tap's products over
// the batch and the output plane, then reduces across its threads. Needs blockDim.x to be a
// multiple of 32, at most 1024.
extern "C" __global__ void depthwise_weight_grad(const float* __restrict__ x,
                                                 const float* __restrict__ grad_out,
                                                 float* __restrict__ grad_weight, Geometry g) {
    const int taps = g.kernel * g.kernel;
    const int c = blockIdx.x / taps;
    const int ky = (blockIdx.x % taps) / g.kernel;
    const int kx = (blockIdx.x % taps) % g.kernel;
    const int out_plane = g.out_h * g.out_w;
    const int in_plane = g.in_h * g.in_w;
    float acc = 0.0f;
    for (int n = 0; n < g.batch; ++n) {
        const int plane = n * g.channels + c;
        const float* go = grad_out + plane * out_plane;
        const float* in = x + plane * in_plane;
        for (int p = threadIdx.x; p < out_plane; p += blockDim.x) {
            const int oy = p / g.out_w;
            const int iy = oy * g.stride - g.padding + ky;
            const int ix = (p - oy * g.out_w) * g.stride - g.padding + kx;
            if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
            acc = fmaf(go[p], in[iy * g.in_w + ix], acc);
        }
    }
    __shared__ float warp_sums[32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        acc += __shfl_down_sync(0xffffffffu, acc, offset);
    }
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < (int)(blockDim.x / 32) ? warp_sums[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1) {
            acc += __shfl_down_sync(0xffffffffu, acc, offset);
        }
        if (lane == 0) grad_weight[blockIdx.x] = acc;
    }
}

// Weight gradient for a K x K filter known at compile time, first pass: one block per
// (channel, image) reads that plane pair once and sums all K*K taps, in registers; the block's
// sums go to `partial[(n * channels + c) * K * K + tap]`. Needs blockDim.x to be a multiple of
// 32, at most 1024.
template <int K>
__device__ void weight_grad_per_image(const float* __restrict__ x,
                                      const float* __restrict__ grad_out,
                                      float* __restrict__ partial, const Geometry& g) {
    const int plane = blockIdx.y * g.channels + blockIdx.x;
    const int out_plane = g.out_h * g.out_w;
    const float* go = grad_out + plane * out_plane;
    const float* in = x + plane * (g.in_h * g.in_w);
    float acc[K * K];
#pragma unroll
    for (int t = 0; t < K * K; ++t) acc[t] = 0.0f;
    for (int p = threadIdx.x; p < out_plane; p += blockDim.x) {
        const int oy = p / g.out_w;
        const int y0 = oy * g.stride - g.padding;
        const int x0 = (p - oy * g.out_w) * g.stride - g.padding;
        const float grad = go[p];
#pragma unroll
        for (int ky = 0; ky < K; ++ky) {
            const int iy = y0 + ky;
            if (iy < 0 || iy >= g.in_h) continue;
#pragma unroll
            for (int kx = 0; kx < K; ++kx) {
                const int ix = x0 + kx;
                if (ix < 0 || ix >= g.in_w) continue;
                acc[ky * K + kx] = fmaf(grad, in[iy * g.in_w + ix], acc[ky * K + kx]);
            }
        }
    }
    __shared__ float warp_sums[K * K][32];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
#pragma unroll
    for (int t = 0; t < K * K; ++t) {
        float v = acc[t];
        for (int offset = 16; offset > 0; offset >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, offset);
        }
        if (lane == 0) warp_sums[t][warp] = v;
    }
    __syncthreads();
    const int warps = blockDim.x / 32;
    for (int t = threadIdx.x; t < K * K; t += blockDim.x) {
        float total = 0.0f;
        for (int w = 0; w < warps; ++w) total += warp_sums[t][w];
        partial[plane * (K * K) + t] = total;
    }
}

extern "C" __global__ void depthwise_weight_grad_k1(const float* __restrict__ x,
                                                    const float* __restrict__ grad_out,
                                                    float* __restrict__ partial, Geometry g) {
    weight_grad_per_image<1>(x, grad_out, partial, g);
}

extern "C" __global__ void depthwise_weight_grad_k3(const float* __restrict__ x,
                                                    const float* __restrict__ grad_out,
                                                    float* __restrict__ partial, Geometry g) {
    weight_grad_per_image<3>(x, grad_out, partial, g);
}

extern "C" __global__ void depthwise_weight_grad_k5(const float* __restrict__ x,
                                                    const float* __restrict__ grad_out,
                                                    float* __restrict__ partial, Geometry g) {
    weight_grad_per_image<5>(x, grad_out, partial, g);
}

// Second pass: one thread per (channel, tap) adds the images' partial sums in image order.
extern "C" __global__ void depthwise_weight_grad_images(const float* __restrict__ partial,
                                                        float* __restrict__ grad_weight,
                                                        Geometry g) {
    const int per_image = g.channels * g.kernel * g.kernel;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= per_image) return;
    float total = 0.0f;
    for (int n = 0; n < g.batch; ++n) total += partial[n * per_image + i];
    grad_weight[i] = total;
}

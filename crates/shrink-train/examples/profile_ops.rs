//! Where a LeNet-5 / MLP training step spends its time, op by op, on burn's
//! flex backend with the calls the interpreter makes: forward per op, each
//! op's backward in isolation (its forward subtracted), whole steps, burn's SGD
//! on a strided vs a row-major gradient, and the alternatives the trainer
//! uses or rejected (MaxPool as argmax + select, Conv as im2col + matmul, a
//! differentiable im2col by `select`).
//!
//! `cargo run --release -p shrink-train --example profile_ops [-- --reps 30]`
//! Threads: set `RAYON_NUM_THREADS`. Prints one `name  median_ms` line per
//! item: process CPU time (all threads), which a machine loaded by other work
//! disturbs less than wall time; `WALL=1` measures wall time instead.

use std::time::Instant;

use burn::tensor::activation as act;
use burn::tensor::module as m;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Seconds of CPU time used by the whole process (all threads): robust to a loaded machine.
fn cpu_s() -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: CLOCK_PROCESS_CPUTIME_ID (2) and a valid out pointer.
    unsafe { clock_gettime(2, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median milliseconds of `f` over `reps` runs after 3 warm-ups.
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..3 {
        std::hint::black_box(f());
    }
    median(
        (0..reps)
            .map(|_| {
                if std::env::var_os("WALL").is_some() {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    t.elapsed().as_secs_f64() * 1e3
                } else {
                    let t = cpu_s();
                    std::hint::black_box(f());
                    (cpu_s() - t) * 1e3
                }
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args.iter().position(|a| a == "--reps").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(30);
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    dev.seed(1);
    let n = 64;
    let rnd4 = |d: [usize; 4], dev: &Device| Tensor::<4>::random(d, Distribution::Normal(0.0, 0.1), dev);
    let rnd2 = |d: [usize; 2], dev: &Device| Tensor::<2>::random(d, Distribution::Normal(0.0, 0.1), dev);
    let rnd1 = |d: usize, dev: &Device| Tensor::<1>::random([d], Distribution::Normal(0.0, 0.1), dev);
    let x = rnd4([n, 1, 28, 28], &dev);
    let w1 = rnd4([20, 1, 5, 5], &dev);
    let b1 = rnd1(20, &dev);
    let w2 = rnd4([50, 20, 5, 5], &dev);
    let b2 = rnd1(50, &dev);
    let f1 = rnd2([500, 800], &dev);
    let fb1 = rnd1(500, &dev);
    let f2 = rnd2([10, 500], &dev);
    let fb2 = rnd1(10, &dev);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
    let lab = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &ad);
    let conv = || ConvOptions::new_with_padding([1, 1], [(0, 0), (0, 0)], [1, 1], 1);
    let pool = || MaxPoolOptions::new([2, 2]).with_stride([2, 2]);
    let ce = |logits: Tensor<2>, lab: Tensor<1, Int>| {
        act::log_softmax(logits, 1).gather(1, lab.reshape([n, 1])).mean().neg()
    };
    let gemm = |a: Tensor<2>, w: Tensor<2>, b: Tensor<1>| {
        let o = b.dims()[0];
        a.matmul(w.transpose()) + b.reshape([1, o])
    };
    let leaf4 = |t: &Tensor<4>| t.clone().autodiff().require_grad();
    let leaf2 = |t: &Tensor<2>| t.clone().autodiff().require_grad();
    let leaf1 = |t: &Tensor<1>| t.clone().autodiff().require_grad();
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut put = |name: &str, ms: f64| {
        println!("{name:<44} {ms:8.3}");
        rows.push((name.to_string(), ms));
    };

    // ---- LeNet-5 forward, op by op, on the autodiff device (as in training)
    let xa = x.clone().autodiff();
    let a1 = m::conv2d(xa.clone(), leaf4(&w1), Some(leaf1(&b1)), conv());
    let p1 = m::max_pool2d(a1.clone(), pool());
    let a2 = m::conv2d(p1.clone(), leaf4(&w2), Some(leaf1(&b2)), conv());
    let p2 = m::max_pool2d(a2.clone(), pool());
    let fl = p2.clone().reshape([n, 800]);
    let h = gemm(fl.clone(), leaf2(&f1), leaf1(&fb1));
    let r = act::relu(h.clone());
    let lo = gemm(r.clone(), leaf2(&f2), leaf1(&fb2));
    put(
        "lenet5 fwd conv1 [64,1,28,28]*[20,1,5,5]",
        time(reps, || m::conv2d(xa.clone(), leaf4(&w1), Some(leaf1(&b1)), conv())),
    );
    put("lenet5 fwd pool1", time(reps, || m::max_pool2d(a1.clone(), pool())));
    put(
        "lenet5 fwd conv2 [64,20,12,12]*[50,20,5,5]",
        time(reps, || m::conv2d(p1.clone(), leaf4(&w2), Some(leaf1(&b2)), conv())),
    );
    put("lenet5 fwd pool2", time(reps, || m::max_pool2d(a2.clone(), pool())));
    put("lenet5 fwd flatten", time(reps, || p2.clone().reshape([n, 800])));
    put("lenet5 fwd gemm1 [64,800]x[500,800]^T", time(reps, || gemm(fl.clone(), leaf2(&f1), leaf1(&fb1))));
    put("lenet5 fwd relu", time(reps, || act::relu(h.clone())));
    put("lenet5 fwd gemm2", time(reps, || gemm(r.clone(), leaf2(&f2), leaf1(&fb2))));
    put("lenet5 fwd ce loss", time(reps, || ce(lo.clone(), lab.clone())));
    let a1p = m::conv2d(x.clone(), w1.clone(), Some(b1.clone()), conv());
    put("lenet5 plain-device fwd pool1 (conv output)", time(reps, || m::max_pool2d(a1p.clone(), pool())));
    let a1k = Tensor::<4>::from_data(a1p.clone().into_data(), &dev);
    put("lenet5 plain-device fwd pool1 (fresh contiguous)", time(reps, || m::max_pool2d(a1k.clone(), pool())));
    put(
        "lenet5 autodiff fwd pool1 (fresh contiguous)",
        time(reps, || m::max_pool2d(a1k.clone().autodiff().require_grad(), pool())),
    );
    put("lenet5 plain-device fwd conv1", time(reps, || m::conv2d(x.clone(), w1.clone(), Some(b1.clone()), conv())));
    let p1p = m::max_pool2d(m::conv2d(x.clone(), w1.clone(), Some(b1.clone()), conv()), pool());
    put("lenet5 plain-device fwd conv2", time(reps, || m::conv2d(p1p.clone(), w2.clone(), Some(b2.clone()), conv())));

    let iso = |name: &str, put: &mut dyn FnMut(&str, f64), f: &dyn Fn() -> Tensor<1>| {
        let fwd = time(reps, f);
        let both = time(reps, || f().backward());
        put(&format!("lenet5 bwd {name}"), both - fwd);
    };
    let dy1 = rnd4([n, 20, 24, 24], &dev).autodiff();
    let dyp = rnd4([n, 20, 12, 12], &dev).autodiff();
    // ---- max pool 2x2/2 as reshape + max_dim (candidate replacement)
    let pool_r = |t: Tensor<4>| {
        let [n, c, h, w] = t.dims();
        t.reshape([n, c, h / 2, 2, w / 2, 2]).max_dim(5).max_dim(3).reshape([n, c, h / 2, w / 2])
    };
    {
        let a = pool_r(a1k.clone()).into_data().try_to_vec::<f32>().unwrap();
        let b = m::max_pool2d(a1k.clone(), pool()).into_data().try_to_vec::<f32>().unwrap();
        println!("reshape-pool == max_pool2d: {}", a == b);
    }
    put("pool1 reshape+max_dim plain", time(reps, || pool_r(a1k.clone())));
    put("pool1 reshape+max_dim autodiff", time(reps, || pool_r(a1k.clone().autodiff().require_grad())));
    iso("pool1 reshape+max_dim", &mut put, &|| (pool_r(a1k.clone().autodiff().require_grad()) * dyp.clone()).sum());

    // ---- max pool 2x2/2 as host argmax + select (gather; backward = scatter-add)
    let pool_s = |t: Tensor<4>| {
        let [n, c, h, w] = t.dims();
        let (oh, ow) = (h / 2, w / 2);
        let xs = t.clone().into_data().try_to_vec::<f32>().unwrap();
        let mut idx = Vec::with_capacity(n * c * oh * ow);
        for p in 0..n * c {
            let base = p * h * w;
            for y in 0..oh {
                let r0 = base + 2 * y * w;
                let r1 = r0 + w;
                for x in 0..ow {
                    let mut best = r0 + 2 * x;
                    for cand in [r0 + 2 * x + 1, r1 + 2 * x, r1 + 2 * x + 1] {
                        if xs[cand] > xs[best] {
                            best = cand;
                        }
                    }
                    idx.push(best as i64);
                }
            }
        }
        let dev = t.device();
        let len = idx.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &dev);
        t.reshape([n * c * h * w]).select(0, idx).reshape([n, c, oh, ow])
    };
    {
        let a = pool_s(a1k.clone()).into_data().try_to_vec::<f32>().unwrap();
        let b = m::max_pool2d(a1k.clone(), pool()).into_data().try_to_vec::<f32>().unwrap();
        println!("select-pool == max_pool2d: {}", a == b);
    }
    {
        let data = a1k.clone().into_data().try_to_vec::<f32>().unwrap();
        put("  into_data [64,20,24,24]", time(reps, || a1k.clone().into_data()));
        put("  into_data+to_vec [64,20,24,24]", time(reps, || a1k.clone().into_data().try_to_vec::<f32>().unwrap()));
        put(
            "  from_data [64,20,24,24]",
            time(reps, || Tensor::<4>::from_data(TensorData::new(data.clone(), [n, 20, 24, 24]), &dev)),
        );
        let idx: Vec<i64> = (0..n * 20 * 144).map(|i| (i * 4) as i64).collect();
        let it = Tensor::<1, Int>::from_data(TensorData::new(idx, [n * 20 * 144]), &dev);
        let flat = a1k.clone().reshape([n * 20 * 576]);
        put("  select 184k of 737k", time(reps, || flat.clone().select(0, it.clone())));
        let flat = a1k.clone().reshape([n * 20 * 576, 1]);
        put("  gather 184k of 737k (dim0 [L,1])", time(reps, || flat.clone().select(0, it.clone())));
    }
    put("pool1 argmax+select plain", time(reps, || pool_s(a1k.clone())));
    put("pool1 argmax+select autodiff", time(reps, || pool_s(a1k.clone().autodiff().require_grad())));
    iso("pool1 argmax+select", &mut put, &|| (pool_s(a1k.clone().autodiff().require_grad()) * dyp.clone()).sum());
    iso("pool1 burn max_pool2d", &mut put, &|| {
        (m::max_pool2d(a1k.clone().autodiff().require_grad(), pool()) * dyp.clone()).sum()
    });

    // ---- conv1 as host im2col + matmul (input needs no gradient)
    let im2col = |x: &Tensor<4>| {
        let [n, c, h, w] = x.dims();
        let (kh, kw) = (5, 5);
        let (oh, ow) = (h - kh + 1, w - kw + 1);
        let xs = x.clone().into_data().try_to_vec::<f32>().unwrap();
        let k = c * kh * kw;
        let l = oh * ow;
        let mut cols = vec![0f32; n * k * l];
        for b in 0..n {
            for ci in 0..c {
                for i in 0..kh {
                    for j in 0..kw {
                        let row = ci * kh * kw + i * kw + j;
                        let dst = &mut cols[(b * k + row) * l..(b * k + row + 1) * l];
                        for y in 0..oh {
                            let src = ((b * c + ci) * h + y + i) * w + j;
                            dst[y * ow..(y + 1) * ow].copy_from_slice(&xs[src..src + ow]);
                        }
                    }
                }
            }
        }
        (cols, [n, k, l], [n, oh, ow])
    };
    let conv_mm = |x: &Tensor<4>, w: Tensor<4>, b: Tensor<1>, ad: &Device| {
        let (cols, d, [n, oh, ow]) = im2col(x);
        let cols = Tensor::<3>::from_data(TensorData::new(cols, d), ad);
        let [o, c, kh, kw] = w.dims();
        let y = w.reshape([1, o, c * kh * kw]).matmul(cols) + b.reshape([1, o, 1]);
        y.reshape([n, o, oh, ow])
    };
    {
        let a = conv_mm(&x, w1.clone(), b1.clone(), &dev).into_data().try_to_vec::<f32>().unwrap();
        let b = a1p.clone().into_data().try_to_vec::<f32>().unwrap();
        let d = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!("conv_mm vs conv2d max abs diff {d}");
    }
    let conv_mm2 = |x: &Tensor<4>, w: Tensor<4>, b: Tensor<1>, ad: &Device| {
        let (cols, [n, k, l], [_, oh, ow]) = im2col(x);
        // [n, k, l] -> [k, n*l]
        let mut t = vec![0f32; cols.len()];
        for b in 0..n {
            for r in 0..k {
                t[r * n * l + b * l..r * n * l + (b + 1) * l]
                    .copy_from_slice(&cols[(b * k + r) * l..(b * k + r + 1) * l]);
            }
        }
        let cols = Tensor::<2>::from_data(TensorData::new(t, [k, n * l]), ad);
        let [o, c, kh, kw] = w.dims();
        let y = w.reshape([o, c * kh * kw]).matmul(cols) + b.reshape([o, 1]);
        y.reshape([o, n, oh * ow]).swap_dims(0, 1).reshape([n, o, oh, ow])
    };
    {
        let a = conv_mm2(&x, w1.clone(), b1.clone(), &dev).into_data().try_to_vec::<f32>().unwrap();
        let b = a1p.clone().into_data().try_to_vec::<f32>().unwrap();
        let d = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!("conv_mm2 vs conv2d max abs diff {d}");
    }
    put("conv1 im2col2+matmul fwd autodiff", time(reps, || conv_mm2(&x, leaf4(&w1), leaf1(&b1), &ad)));
    put("conv1 im2col2+matmul fwd plain", time(reps, || conv_mm2(&x, w1.clone(), b1.clone(), &dev)));
    iso("conv1 im2col2+matmul (dW, db)", &mut put, &|| (conv_mm2(&x, leaf4(&w1), leaf1(&b1), &ad) * dy1.clone()).sum());
    put(
        "conv1 burn fwd+bwd(dW,db)",
        time(reps, || {
            (m::conv2d(x.clone().autodiff(), leaf4(&w1), Some(leaf1(&b1)), conv()) * dy1.clone()).sum().backward()
        }),
    );
    put(
        "conv1 im2col+bmm fwd+bwd(dW,db)",
        time(reps, || (conv_mm(&x, leaf4(&w1), leaf1(&b1), &ad) * dy1.clone()).sum().backward()),
    );
    put(
        "conv1 im2col+mm fwd+bwd(dW,db)",
        time(reps, || (conv_mm2(&x, leaf4(&w1), leaf1(&b1), &ad) * dy1.clone()).sum().backward()),
    );
    let p1c = p1.clone().inner();
    let dy2 = rnd4([n, 50, 8, 8], &dev).autodiff();
    // conv2 with a differentiable im2col: a select of precomputed indices (backward: scatter-add)
    {
        let (n, c, h, w, k, o) = (64usize, 20usize, 12usize, 12usize, 5usize, 50usize);
        let (oh, ow) = (h - k + 1, w - k + 1);
        let (kk, l) = (c * k * k, oh * ow);
        let mut idx = Vec::with_capacity(n * kk * l);
        for b in 0..n {
            for ci in 0..c {
                for i in 0..k {
                    for j in 0..k {
                        for y in 0..oh {
                            for xx in 0..ow {
                                idx.push((((b * c + ci) * h + y + i) * w + xx + j) as i64);
                            }
                        }
                    }
                }
            }
        }
        let len = idx.len();
        let it = Tensor::<1, Int>::from_data(TensorData::new(idx, [len]), &ad);
        let conv_sel = |xin: Tensor<4>, wt: Tensor<4>, bias: Tensor<1>| {
            let cols = xin.reshape([n * c * h * w]).select(0, it.clone()).reshape([n, kk, l]);
            (wt.reshape([1, o, kk]).matmul(cols) + bias.reshape([1, o, 1])).reshape([n, o, oh, ow])
        };
        let a = conv_sel(p1c.clone(), w2.clone(), b2.clone()).into_data().try_to_vec::<f32>().unwrap();
        let b = m::conv2d(p1c.clone(), w2.clone(), Some(b2.clone()), conv()).into_data().try_to_vec::<f32>().unwrap();
        let d = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!("conv2 select-im2col vs conv2d max abs diff {d}");
        put(
            "conv2 burn fwd+bwd(dX,dW,db)",
            time(reps, || {
                (m::conv2d(p1c.clone().autodiff().require_grad(), leaf4(&w2), Some(leaf1(&b2)), conv()) * dy2.clone())
                    .sum()
                    .backward()
            }),
        );
        put(
            "conv2 select-im2col fwd+bwd(dX,dW,db)",
            time(reps, || {
                (conv_sel(p1c.clone().autodiff().require_grad(), leaf4(&w2), leaf1(&b2)) * dy2.clone()).sum().backward()
            }),
        );
    }
    put("conv1 im2col host only", time(reps, || im2col(&x)));
    put("conv1 im2col+matmul fwd autodiff", time(reps, || conv_mm(&x, leaf4(&w1), leaf1(&b1), &ad)));
    iso("conv1 im2col+matmul (dW, db)", &mut put, &|| (conv_mm(&x, leaf4(&w1), leaf1(&b1), &ad) * dy1.clone()).sum());

    // ---- whole step: forward + backward
    let fwd = || {
        let l = [leaf4(&w1), leaf4(&w2)];
        let lb = [leaf1(&b1), leaf1(&b2), leaf1(&fb1), leaf1(&fb2)];
        let lf = [leaf2(&f1), leaf2(&f2)];
        let a1 = m::conv2d(x.clone().autodiff(), l[0].clone(), Some(lb[0].clone()), conv());
        let p1 = m::max_pool2d(a1, pool());
        let a2 = m::conv2d(p1, l[1].clone(), Some(lb[1].clone()), conv());
        let p2 = m::max_pool2d(a2, pool());
        let h = gemm(p2.reshape([n, 800]), lf[0].clone(), lb[2].clone());
        let lo = gemm(act::relu(h), lf[1].clone(), lb[3].clone());
        (ce(lo, lab.clone()), l, lb, lf)
    };
    put("lenet5 forward total", time(reps, || fwd().0));
    put(
        "lenet5 forward+backward total",
        time(reps, || {
            let (loss, l, lb, lf) = fwd();
            let g = loss.backward();
            (l[0].grad(&g), lf[0].grad(&g), lb[0].grad(&g))
        }),
    );

    // ---- each backward alone (forward of the isolated op subtracted)
    iso("conv1 (dW, db; no dX)", &mut put, &|| {
        (m::conv2d(x.clone().autodiff(), leaf4(&w1), Some(leaf1(&b1)), conv()) * dy1.clone()).sum()
    });
    let p1c = p1.clone().inner();
    let dy2 = rnd4([n, 50, 8, 8], &dev).autodiff();
    iso("conv2 (dX, dW, db)", &mut put, &|| {
        (m::conv2d(p1c.clone().autodiff().require_grad(), leaf4(&w2), Some(leaf1(&b2)), conv()) * dy2.clone()).sum()
    });
    iso("conv2 (dW, db only)", &mut put, &|| {
        (m::conv2d(p1c.clone().autodiff(), leaf4(&w2), Some(leaf1(&b2)), conv()) * dy2.clone()).sum()
    });
    let a1c = a1.clone().inner();
    iso("pool1", &mut put, &|| (m::max_pool2d(a1c.clone().autodiff().require_grad(), pool()) * dyp.clone()).sum());
    let flc = fl.clone().inner();
    let dyh = rnd2([n, 500], &dev).autodiff();
    iso("gemm1 (dX, dW, db)", &mut put, &|| {
        (gemm(flc.clone().autodiff().require_grad(), leaf2(&f1), leaf1(&fb1)) * dyh.clone()).sum()
    });
    let dyp4 = rnd4([n, 50, 8, 8], &dev).autodiff();
    iso("mul+sum reference (the harness itself)", &mut put, &|| {
        (a2.clone().inner().autodiff().require_grad() * dyp4.clone()).sum()
    });

    // ---- optimizer: burn's SGD (momentum 0.9) on a [500,800] weight, grad strided (transposed) vs contiguous
    {
        use burn::optim::momentum::MomentumConfig;
        use burn::optim::{Optimizer, SgdConfig};
        let sgd =
            SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0))).build();
        let g_strided = rnd2([800, 500], &dev).transpose();
        let g_contig = rnd2([500, 800], &dev);
        let g_fixed = g_strided.clone().reshape([400_000]).reshape([500, 800]);
        put(
            "reshape round trip of strided [500,800]",
            time(reps, || g_strided.clone().reshape([400_000]).reshape([500, 800])),
        );
        for (name, g) in [("strided grad", g_strided), ("contiguous grad", g_contig), ("reshaped grad", g_fixed)] {
            let mut w = f1.clone();
            let (nw, st) = sgd.step(0.01, w.clone(), g.clone(), None);
            w = nw;
            let mut st = st;
            let ms = time(reps, || {
                let (nw, s2) = sgd.step(0.01, w.clone(), g.clone(), st.clone());
                st = s2;
                nw
            });
            put(&format!("sgd step fc1 [500,800], {name}"), ms);
        }
    }

    // ---- MLP 784-300-100-10
    let xm = rnd2([n, 784], &dev);
    let (m1, mb1, m2, mb2, m3, mb3) = (
        rnd2([300, 784], &dev),
        rnd1(300, &dev),
        rnd2([100, 300], &dev),
        rnd1(100, &dev),
        rnd2([10, 100], &dev),
        rnd1(10, &dev),
    );
    let mlp = || {
        let ps = [leaf2(&m1), leaf2(&m2), leaf2(&m3)];
        let bs = [leaf1(&mb1), leaf1(&mb2), leaf1(&mb3)];
        let h = act::relu(gemm(xm.clone().autodiff(), ps[0].clone(), bs[0].clone()));
        let h = act::relu(gemm(h, ps[1].clone(), bs[1].clone()));
        (ce(gemm(h, ps[2].clone(), bs[2].clone()), lab.clone()), ps, bs)
    };
    put("mlp forward total", time(reps, || mlp().0));
    put(
        "mlp forward+backward total",
        time(reps, || {
            let (l, ps, bs) = mlp();
            let g = l.backward();
            (ps[0].grad(&g), bs[0].grad(&g))
        }),
    );
    let _ = rows;
}

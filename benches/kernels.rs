//! Matrix-kernel throughput of the LLM engine (a bench binary, not criterion): each GGML weight format
//! the fast path multiplies, at Qwen2.5-0.5B's shapes (the formats of its Q4_K_M file: Q5_0 for the
//! 896-wide projections, Q4_K and Q6_K for the feed-forward down projection, Q8_0 for the output), times
//! 1 activation row (a decoded token) and 200 (a prompt), one thread, every kernel this CPU runs.
//! Prints billions of multiply-adds per second, medians of `--runs` (default 7).
//!
//! `cargo bench --bench kernels -- [--runs N] [--tokens N]`

use idol::persona::llm::quant::{Acts, Kernel, MatJob, WType};
use idol::persona::llm::repack;
use std::time::Instant;

/// A deterministic pseudo-random byte stream (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// `rows` rows of `cols` weights in format `t`: random quants, finite small f16 scales.
fn weights(t: WType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bb = t.block_bytes();
    let nb = cols / t.block_len();
    let mut w = vec![0u8; rows * nb * bb];
    for b in w.chunks_exact_mut(bb) {
        b.iter_mut().for_each(|x| *x = rng.byte());
        let scale = half::f16::from_f32(0.01 + 0.01 * rng.unit().abs()).to_le_bytes();
        let at: &[usize] = match t {
            WType::Q4K => &[0, 2],
            WType::Q6K => &[208],
            _ => &[0],
        };
        for &i in at {
            b[i..i + 2].copy_from_slice(&scale);
        }
    }
    w
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let runs = arg("--runs", 7);
    let tokens = arg("--tokens", 200);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // (format, output rows, input width, what it is in Qwen2.5-0.5B)
    let shapes = [
        (WType::Q5_0, 4864, 896, "ffn_gate/up (Q5_0)"),
        (WType::Q5_0, 896, 896, "attn_q/o (Q5_0)"),
        (WType::Q5_0R, 4864, 896, "ffn_gate/up (Q5_0, repacked)"),
        (WType::Q4K, 896, 4864, "ffn_down (Q4_K)"),
        (WType::Q6K, 896, 4864, "ffn_down (Q6_K)"),
        (WType::Q8_0, 896, 896, "square Q8_0"),
        (WType::Q8_0, 32768, 896, "output, a slice (Q8_0)"),
        // larger than the caches: a decoded token streams its weights from memory
        (WType::Q5_0, 48 * 4864, 896, "24 layers' ffn_gate/up (Q5_0)"),
        (
            WType::Q5_0R,
            48 * 4864,
            896,
            "24 layers' ffn_gate/up (Q5_0, repacked)",
        ),
        (WType::Q4K, 12 * 896, 4864, "12 layers' ffn_down (Q4_K)"),
        (WType::Q6K, 12 * 896, 4864, "12 layers' ffn_down (Q6_K)"),
        (WType::Q8_0, 151936, 896, "output (Q8_0)"),
    ];
    println!("## Matrix kernels (persona::llm::quant), 1 thread, GMAC/s, medians of {runs}\n");
    println!("| matrix | rows x cols | kernel | 1 token | {tokens} tokens |");
    println!("|---|---|---|---|---|");
    for (t, rows, cols, what) in shapes {
        let w = if t == WType::Q5_0R {
            repack::repack(&weights(WType::Q5_0, rows, cols, &mut rng), rows, cols)
        } else {
            weights(t, rows, cols, &mut rng)
        };
        for k in Kernel::available() {
            if k == Kernel::Scalar || (t == WType::Q5_0R && k != Kernel::best()) {
                continue;
            }
            let mut cells = Vec::new();
            for n in [1, tokens] {
                if n > 1 && rows > 50_000 {
                    cells.push("-".into());
                    continue;
                }
                let x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
                let mut acts = Acts::default();
                acts.quantize_for(&x, cols, &[t]);
                let job = MatJob {
                    t,
                    w: &w,
                    row_bytes: w.len() / rows,
                    acts: &acts,
                };
                let mut out = vec![0f32; n * rows];
                job.run_with(k, 0, rows, &mut out, rows);
                let reps = (2_000_000_000 / (rows * cols * n)).clamp(1, 200);
                let mut rates = Vec::new();
                for _ in 0..runs {
                    let t0 = Instant::now();
                    for _ in 0..reps {
                        job.run_with(k, 0, rows, &mut out, rows);
                    }
                    let s = t0.elapsed().as_secs_f64();
                    rates.push((rows * cols * n * reps) as f64 / s / 1e9);
                }
                std::hint::black_box(&out);
                cells.push(format!("{:.1}", median(rates)));
            }
            println!(
                "| {what} | {rows} x {cols} | {k:?} | {} | {} |",
                cells[0], cells[1]
            );
        }
    }
}

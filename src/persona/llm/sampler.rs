//! Choosing the next token from the logits.
//!
//! Order (llama.cpp's default chain): repetition penalty over the last `repeat_last_n` tokens (a positive
//! logit is divided by the penalty, a negative one multiplied), then, unless `temperature <= 0` (greedy:
//! the first index of the maximum), top-k, top-p (the smallest set of most likely tokens whose probability
//! reaches `top_p`) and min-p (tokens at least `min_p` times as likely as the best), all on the
//! temperature-1 distribution; finally the survivors' logits are divided by the temperature, softmaxed
//! and one is drawn with the caller's seeded ChaCha8 generator, so a seed gives the same tokens.

use crate::persona::GenParams;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// First index of the largest value.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

pub fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], penalty: f32, last_n: usize) {
    if penalty == 1.0 || last_n == 0 {
        return;
    }
    let start = history.len().saturating_sub(last_n);
    let mut seen = std::collections::HashSet::new();
    for &t in &history[start..] {
        if seen.insert(t)
            && let Some(l) = logits.get_mut(t as usize)
        {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn softmax(c: &[(u32, f32)], temp: f32) -> Vec<f32> {
    let mx = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
    let mut p: Vec<f32> = c.iter().map(|x| ((x.1 - mx) / temp).exp()).collect();
    let s: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= s);
    p
}

/// Pick the next token. `logits` is modified (penalties).
pub fn sample(logits: &mut [f32], p: &GenParams, history: &[u32], rng: &mut ChaCha8Rng) -> u32 {
    apply_repeat_penalty(logits, history, p.repeat_penalty, p.repeat_last_n);
    if p.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut c: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, l))
        .collect();
    if c.is_empty() {
        return argmax(logits);
    }
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if p.top_k > 0 && p.top_k < c.len() {
        c.select_nth_unstable_by(p.top_k - 1, order);
        c.truncate(p.top_k);
    }
    c.sort_unstable_by(order);
    if p.top_p < 1.0 {
        let probs = softmax(&c, 1.0);
        let mut cum = 0.0;
        let mut keep = c.len();
        for (i, q) in probs.iter().enumerate() {
            cum += q;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep.max(1));
    }
    if p.min_p > 0.0 {
        let probs = softmax(&c, 1.0);
        let thr = probs[0] * p.min_p;
        let keep = probs.iter().take_while(|&&q| q >= thr).count();
        c.truncate(keep.max(1));
    }
    let probs = softmax(&c, p.temperature);
    let u: f32 = rng.random::<f32>();
    let mut cum = 0.0;
    for (i, q) in probs.iter().enumerate() {
        cum += q;
        if u < cum {
            return c[i].0;
        }
    }
    c[c.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_and_filters() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let p = GenParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(sample(&mut [0.0, 3.0, 3.0, 1.0], &p, &[], &mut rng), 1);
        // top_k = 1 is greedy whatever the temperature
        let p = GenParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&mut [0.0, 1.0, 2.0, 1.5], &p, &[], &mut rng), 2);
        }
        // min-p removes the unlikely tail
        let p = GenParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            repeat_penalty: 1.0,
            ..Default::default()
        };
        for _ in 0..50 {
            let t = sample(&mut [10.0, 9.8, 0.0, -3.0], &p, &[], &mut rng);
            assert!(t < 2);
        }
        // repetition penalty
        let mut l = [2.0, -2.0, 1.0];
        apply_repeat_penalty(&mut l, &[0, 1, 0], 2.0, 64);
        assert_eq!(l, [1.0, -4.0, 1.0]);
    }
}

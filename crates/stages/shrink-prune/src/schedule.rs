//! Pruning schedules: the sparsity each of `n` prune steps aims at, from an
//! initial sparsity `s_i` (default 0) to the final `s_f`.
//!
//! - `oneshot`: one step straight to `s_f`.
//! - `equal`: `n` equal increments, `s_k = s_i + (s_f - s_i) · k / n`.
//! - `agp`: automated gradual pruning (Zhu & Gupta 2017), cubic:
//!   `s_k = s_f + (s_i - s_f) · (1 - k / n)^3`: large steps first, while the
//!   network has redundancy to spare, small ones at the end.
//!
//! Step `k` runs from 1 to `n`; every schedule reaches exactly `s_f` at `k = n`.

/// How the sparsity grows over the prune steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    OneShot,
    Equal,
    Agp,
}

impl Schedule {
    /// Parses the TOML name (`oneshot`, `equal`, `agp`).
    pub fn parse(name: &str) -> Option<Schedule> {
        match name {
            "oneshot" => Some(Schedule::OneShot),
            "equal" => Some(Schedule::Equal),
            "agp" => Some(Schedule::Agp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schedule::OneShot => "oneshot",
            Schedule::Equal => "equal",
            Schedule::Agp => "agp",
        }
    }

    /// The fraction of the way from `s_i` to `s_f` after step `k` of `n`
    /// (0 < k ≤ n; 1 at k = n).
    pub fn progress(self, k: usize, n: usize) -> f64 {
        let n = n.max(1);
        let t = (k.min(n) as f64) / n as f64;
        match self {
            Schedule::OneShot => 1.0,
            Schedule::Equal => t,
            Schedule::Agp => 1.0 - (1.0 - t).powi(3),
        }
    }

    /// The sparsity after step `k` of `n`, going from `initial` to `target`.
    /// An `initial` above `target` is clamped to `target`.
    pub fn sparsity_at(self, initial: f64, target: f64, k: usize, n: usize) -> f64 {
        let s_i = initial.min(target);
        if k >= n.max(1) {
            return target;
        }
        s_i + (target - s_i) * self.progress(k, n)
    }
}

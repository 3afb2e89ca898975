//! Timers as Prometheus observers: cumulative histograms (aggregatable
//! across instances with `histogram_quantile(sum by (le) (rate(..)))`) and
//! summaries over a sliding window (`max_age`), kept from flush to flush
//! for each timer a mapping (or `timer_histogram`) turns into one.
//!
//! Each flush brings the interval's values. A sampled value counts for
//! `1/rate` of an observation, as statsd counts it: the interval's weighted
//! count is spread evenly over its values (exact whenever one series is
//! sent at one sample rate, the way clients send). Summary quantiles are
//! exact over the window's values (at most [`MAX_WINDOW_VALUES`], the
//! newest kept), not the Go client's approximation.

use std::collections::VecDeque;

use super::mapping::Observer;

/// Values a summary window keeps per series; older ones go first.
pub const MAX_WINDOW_VALUES: usize = 10_000;

/// One observer's figures as exposed.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// `(upper bound, cumulative count)` per bucket, `+Inf` last.
    Histogram {
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    },
    /// `(quantile, value)`; `NaN` with no value in the window.
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    },
}

/// What persists for one observed timer.
#[derive(Debug)]
pub struct ObserverState {
    config: Observer,
    /// Values are multiplied by this (1/1000: statsd's ms to seconds).
    scale: f64,
    sum: f64,
    count: f64,
    /// Histogram: per bucket (not cumulative), `+Inf` last.
    counts: Vec<f64>,
    /// Summary: `(unix second, values)` per flush, newest last.
    window: VecDeque<(u64, Vec<f64>)>,
    held: usize,
}

impl ObserverState {
    /// A fresh state for `config`, values multiplied by `scale`.
    pub fn new(config: &Observer, scale: f64) -> Self {
        let counts = match config {
            Observer::Histogram { buckets } => vec![0.0; buckets.len() + 1],
            Observer::Summary { .. } => Vec::new(),
        };
        ObserverState {
            config: config.clone(),
            scale,
            sum: 0.0,
            count: 0.0,
            counts,
            window: VecDeque::new(),
            held: 0,
        }
    }

    /// Whether this state was made for `config` and `scale`.
    pub fn is_for(&self, config: &Observer, scale: f64) -> bool {
        self.config == *config && self.scale == scale
    }

    /// Add one interval's `values`, which stand for `count` observations
    /// (the sample-rate-weighted count) summing to `weighted_sum`, at `now`.
    pub fn observe(&mut self, values: &[f64], count: f64, weighted_sum: f64, now: u64) {
        self.sum += weighted_sum * self.scale;
        self.count += count;
        match &self.config {
            Observer::Histogram { buckets } => {
                if values.is_empty() {
                    return;
                }
                let weight = count / values.len() as f64;
                for v in values {
                    let v = v * self.scale;
                    let i = buckets.partition_point(|b| *b < v);
                    self.counts[i] += weight;
                }
            }
            Observer::Summary { max_age, .. } => {
                let age = max_age.as_secs().max(1);
                while self
                    .window
                    .front()
                    .is_some_and(|(t, _)| now.saturating_sub(*t) >= age)
                {
                    if let Some((_, old)) = self.window.pop_front() {
                        self.held -= old.len();
                    }
                }
                if !values.is_empty() {
                    let take = values.len().min(MAX_WINDOW_VALUES);
                    let new: Vec<f64> = values[values.len() - take..]
                        .iter()
                        .map(|v| v * self.scale)
                        .collect();
                    self.held += new.len();
                    self.window.push_back((now, new));
                }
                while self.held > MAX_WINDOW_VALUES {
                    let Some((_, front)) = self.window.front_mut() else {
                        break;
                    };
                    let cut = (self.held - MAX_WINDOW_VALUES).min(front.len());
                    front.drain(..cut);
                    self.held -= cut;
                    if front.is_empty() {
                        self.window.pop_front();
                    }
                }
            }
        }
    }

    /// The figures to expose now.
    pub fn output(&self) -> Observed {
        match &self.config {
            Observer::Histogram { buckets } => {
                let mut cum = 0.0;
                let mut out = Vec::with_capacity(self.counts.len());
                for (i, c) in self.counts.iter().enumerate() {
                    cum += c;
                    out.push((buckets.get(i).copied().unwrap_or(f64::INFINITY), cum));
                }
                Observed::Histogram {
                    buckets: out,
                    sum: self.sum,
                    count: self.count,
                }
            }
            Observer::Summary { quantiles, .. } => {
                let mut all: Vec<f64> = self
                    .window
                    .iter()
                    .flat_map(|(_, v)| v.iter().copied())
                    .collect();
                all.sort_by(f64::total_cmp);
                let q = quantiles
                    .iter()
                    .map(|&q| (q, nearest_rank(&all, q)))
                    .collect();
                Observed::Summary {
                    quantiles: q,
                    sum: self.sum,
                    count: self.count,
                }
            }
        }
    }
}

/// The `q` quantile of sorted `v` by nearest rank; `NaN` when empty.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_is_cumulative_and_weighted() {
        let h = Observer::Histogram {
            buckets: vec![0.01, 0.1, 1.0],
        };
        let mut s = ObserverState::new(&h, 0.001);
        // 5 ms, 50 ms, 100 ms (on the bound: counted in le=0.1), 2 s.
        s.observe(&[5.0, 50.0, 100.0, 2000.0], 4.0, 2155.0, 1);
        // One value at @0.5 counts as two.
        s.observe(&[7.0], 2.0, 14.0, 2);
        let Observed::Histogram {
            buckets,
            sum,
            count,
        } = s.output()
        else {
            panic!("not a histogram")
        };
        assert_eq!(
            buckets,
            vec![(0.01, 3.0), (0.1, 5.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
        );
        assert_eq!(count, 6.0);
        assert!((sum - 2.169).abs() < 1e-9, "{sum}");
        assert!(s.is_for(&h, 0.001) && !s.is_for(&h, 1.0));
    }

    #[test]
    fn summary_window_forgets_old_values() {
        let c = Observer::Summary {
            quantiles: vec![0.5, 0.99],
            max_age: Duration::from_secs(60),
        };
        let mut s = ObserverState::new(&c, 1.0);
        s.observe(&[1.0, 2.0, 3.0, 4.0], 4.0, 10.0, 100);
        s.observe(&[100.0], 1.0, 100.0, 130);
        let Observed::Summary {
            quantiles, count, ..
        } = s.output()
        else {
            panic!("not a summary")
        };
        assert_eq!(quantiles, vec![(0.5, 3.0), (0.99, 100.0)]);
        assert_eq!(count, 5.0);
        // At 160 the values of 100 are past max_age; count stays cumulative.
        s.observe(&[], 0.0, 0.0, 160);
        let Observed::Summary {
            quantiles, count, ..
        } = s.output()
        else {
            panic!("not a summary")
        };
        assert_eq!((quantiles, count), (vec![(0.5, 100.0), (0.99, 100.0)], 5.0));
        s.observe(&[], 0.0, 0.0, 200);
        let Observed::Summary { quantiles, .. } = s.output() else {
            panic!("not a summary")
        };
        assert!(quantiles[0].1.is_nan());
        // The window is bounded.
        let many: Vec<f64> = (0..MAX_WINDOW_VALUES + 10).map(|v| v as f64).collect();
        s.observe(&many, many.len() as f64, 0.0, 201);
        s.observe(&[1.0; 10], 10.0, 10.0, 202);
        assert_eq!(s.held, MAX_WINDOW_VALUES);
    }
}

//! The statistics behind the traffic analyses: percentiles, the chi-square goodness-of-fit test, readable
//! rounding of recommended durations, and confidence from sample size. Plain `f64` code with no
//! dependencies, unit-tested against textbook values.

use serde::Serialize;
use std::collections::BTreeMap;

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` (ascending), interpolating linearly between the two nearest
/// ranks (numpy's default, Hyndman & Fan type 7), so that small samples give stable values rather than
/// jumping from one observation to the next. `None` for an empty sample.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q.clamp(0.0, 1.0) * last as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let fraction = rank - below as f64;
    Some(sorted[below] + (sorted[above] - sorted[below]) * fraction)
}

/// Request durations in whole milliseconds (as access logs record them), counted by value: how the
/// analyses collect latency. The SQL side groups by `duration_ms` and counts, so a million requests arrive
/// as a few hundred (value, count) pairs, and samples of different groups merge by adding counts.
/// Percentiles from it are exact, not approximated (see [`Latency::of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u64, u64>,
}

impl Histogram {
    /// Counts `count` requests that took `duration_ms`.
    pub fn add(&mut self, duration_ms: u64, count: u64) {
        if count > 0 {
            *self.counts.entry(duration_ms).or_default() += count;
        }
    }

    /// Adds every request counted in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (&duration, &count) in &other.counts {
            self.add(duration, count);
        }
    }

    pub fn samples(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The value at `rank` (0-based position in the sorted sample), if the sample is that large.
    fn value_at(&self, rank: u64) -> Option<f64> {
        let mut seen = 0;
        self.counts.iter().find_map(|(&duration, &count)| {
            seen += count;
            (rank < seen).then_some(duration as f64)
        })
    }
}

/// Latency percentiles of one sample, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of the sample counted in `histogram`; `None` when it is empty. Each is exactly
    /// [`percentile`] of the sorted sample (type 7, interpolating between the two nearest ranks), rounded
    /// to 0.1 ms: the histogram only spares sorting every duration.
    pub fn of(histogram: &Histogram) -> Option<Latency> {
        let last = histogram.samples().checked_sub(1)?;
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let at = |q: f64| {
            let rank = q * last as f64;
            let (below, above) = (histogram.value_at(rank.floor() as u64)?, histogram.value_at(rank.ceil() as u64)?);
            Some(round(below + (above - below) * (rank - rank.floor())))
        };
        Some(Latency {
            samples: last + 1,
            p50_ms: at(0.5)?,
            p95_ms: at(0.95)?,
            p99_ms: at(0.99)?,
            p999_ms: at(0.999)?,
            max_ms: *histogram.counts.keys().next_back()? as f64,
        })
    }
}

/// Pearson's chi-square statistic of `observed` counts against `expected` shares (any positive scale; they
/// are normalized to the observed total). Cells with a zero expected share are ignored.
pub fn chi_square(observed: &[u64], expected_shares: &[f64]) -> f64 {
    let total: u64 = observed.iter().sum();
    let share_sum: f64 = expected_shares.iter().filter(|s| **s > 0.0).sum();
    if total == 0 || share_sum <= 0.0 {
        return 0.0;
    }
    observed
        .iter()
        .zip(expected_shares)
        .filter(|(_, share)| **share > 0.0)
        .map(|(&o, &share)| {
            let e = total as f64 * share / share_sum;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

/// The p-value of a chi-square statistic with `df` degrees of freedom: the upper regularized incomplete
/// gamma function Q(df/2, x/2).
pub fn chi_square_p_value(statistic: f64, df: u32) -> f64 {
    if df == 0 || !statistic.is_finite() {
        return if statistic.is_finite() { 1.0 } else { 0.0 };
    }
    if statistic <= 0.0 {
        return 1.0;
    }
    upper_regularized_gamma(f64::from(df) / 2.0, statistic / 2.0)
}

/// Q(a, x) = Γ(a, x) / Γ(a), by its series below `a + 1` and its continued fraction above (Numerical
/// Recipes §6.2), both converging quickly in their range.
fn upper_regularized_gamma(a: f64, x: f64) -> f64 {
    const EPSILON: f64 = 1e-14;
    const MAX_ITERATIONS: usize = 500;
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let mut term = 1.0 / a;
        let mut sum = term;
        let mut denominator = a;
        for _ in 0..MAX_ITERATIONS {
            denominator += 1.0;
            term *= x / denominator;
            sum += term;
            if term.abs() < sum.abs() * EPSILON {
                break;
            }
        }
        (1.0 - sum * log_prefactor.exp()).clamp(0.0, 1.0)
    } else {
        // Modified Lentz evaluation of the continued fraction.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..=MAX_ITERATIONS {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < EPSILON {
                break;
            }
        }
        (log_prefactor.exp() * h).clamp(0.0, 1.0)
    }
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, n = 9; relative error below 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series =
        COEFFICIENTS[1..].iter().enumerate().fold(COEFFICIENTS[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// Rounds a duration up to a value people write in configuration: the next 10 ms below 100 ms, 50 ms
/// below 1 s, 100 ms below 10 s, whole seconds above. Finer than a 1-2-5 series (which can nearly double a
/// value) while still reading as chosen rather than computed. At least 10 ms.
pub fn round_up_readable_ms(ms: f64) -> u64 {
    let ms = if ms.is_finite() { ms.max(1.0) } else { 1.0 };
    let step = match ms {
        m if m <= 100.0 => 10.0,
        m if m <= 1_000.0 => 50.0,
        m if m <= 10_000.0 => 100.0,
        _ => 1_000.0,
    };
    // Values are durations in milliseconds; anything beyond u64 would have been rejected upstream.
    ((ms / step).ceil() * step) as u64
}

/// How far a figure estimated from a sample can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    /// Confidence in the `q`-quantile of `samples` observations, from how many observations lie beyond it:
    /// ten or more make it an estimate (high), at least one makes it a bound (medium), none means the
    /// sample is too small to reach that quantile and the figure is really the maximum seen (low).
    pub fn for_quantile(samples: u64, q: f64) -> Confidence {
        let beyond = samples as f64 * (1.0 - q);
        if beyond >= 10.0 - 1e-9 {
            Confidence::High
        } else if beyond >= 1.0 - 1e-9 {
            Confidence::Medium
        } else {
            Confidence::Low
        }
    }

    /// Confidence in a rate estimated from `samples` events: ≥ 1000 high, ≥ 100 medium.
    pub fn for_rate(samples: u64) -> Confidence {
        match samples {
            1_000.. => Confidence::High,
            100.. => Confidence::Medium,
            _ => Confidence::Low,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&sorted, 1.0), Some(10.0));
        assert_eq!(percentile(&sorted, 0.5), Some(5.5));
        assert!(close(percentile(&sorted, 0.95).unwrap(), 9.55, 1e-9));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        // Out-of-range quantiles clamp rather than index out of bounds.
        assert_eq!(percentile(&sorted, 1.5), Some(10.0));
    }

    fn histogram(durations: &[u64]) -> Histogram {
        let mut histogram = Histogram::default();
        for &d in durations {
            histogram.add(d, 1);
        }
        histogram
    }

    #[test]
    fn latency_summary_interpolates_and_rounds() {
        let latency = Latency::of(&histogram(&[30, 10, 20])).unwrap();
        assert_eq!((latency.samples, latency.p50_ms, latency.max_ms), (3, 20.0, 30.0));
        assert_eq!(latency.p99_ms, 29.8);
        assert!(Latency::of(&Histogram::default()).is_none());
    }

    #[test]
    fn histogram_percentiles_equal_those_of_the_sorted_sample() {
        // A skewed sample with many repeated values, as whole-millisecond latencies are.
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut durations: Vec<u64> = (0..5_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let tail = if rng.is_multiple_of(50) { 400 } else { 0 };
                rng % 40 + tail
            })
            .collect();
        let latency = Latency::of(&histogram(&durations)).unwrap();
        durations.sort_unstable();
        let sorted: Vec<f64> = durations.iter().map(|&d| d as f64).collect();
        let exact = |q: f64| (percentile(&sorted, q).unwrap() * 10.0).round() / 10.0;
        assert_eq!(latency.samples, 5_000);
        assert_eq!(
            [latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.p999_ms, latency.max_ms],
            [exact(0.5), exact(0.95), exact(0.99), exact(0.999), *sorted.last().unwrap()]
        );
        // Merging adds counts: two halves give the whole.
        let (a, b) = durations.split_at(1_234);
        let mut merged = histogram(a);
        merged.merge(&histogram(b));
        assert_eq!(Latency::of(&merged), Some(latency));
        // One sample: every percentile is that value.
        assert_eq!(Latency::of(&histogram(&[7])).map(|l| (l.p50_ms, l.p999_ms, l.max_ms)), Some((7.0, 7.0, 7.0)));
    }

    #[test]
    fn chi_square_p_values_match_tables() {
        // Critical values from standard chi-square tables.
        assert!(close(chi_square_p_value(3.841_458_8, 1), 0.05, 1e-6));
        assert!(close(chi_square_p_value(6.634_896_6, 1), 0.01, 1e-6));
        assert!(close(chi_square_p_value(9.210_340_4, 2), 0.01, 1e-6));
        assert!(close(chi_square_p_value(11.344_866_7, 3), 0.01, 1e-6));
        assert!(close(chi_square_p_value(0.454_936_4, 1), 0.5, 1e-6));
        // df = 2 has the closed form exp(-x/2).
        assert!(close(chi_square_p_value(1.0, 2), (-0.5f64).exp(), 1e-12));
        assert_eq!(chi_square_p_value(0.0, 3), 1.0);
        assert_eq!(chi_square_p_value(f64::INFINITY, 3), 0.0);
        assert!(chi_square_p_value(10_000.0, 1) < 1e-100);
    }

    #[test]
    fn chi_square_statistic_of_a_split() {
        // 90/10 configured, 60/40 observed over 100 requests: (60-90)²/90 + (40-10)²/10 = 10 + 90.
        assert!(close(chi_square(&[60, 40], &[90.0, 10.0]), 100.0, 1e-9));
        assert_eq!(chi_square(&[50, 50], &[50.0, 50.0]), 0.0);
        assert_eq!(chi_square(&[], &[]), 0.0);
        // Zero-weight cells do not divide by zero.
        assert!(chi_square(&[10, 0], &[100.0, 0.0]).is_finite());
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-12));
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12));
    }

    #[test]
    fn readable_rounding_goes_up_to_the_next_step() {
        assert_eq!(round_up_readable_ms(3.2), 10);
        assert_eq!(round_up_readable_ms(87.0), 90);
        assert_eq!(round_up_readable_ms(100.0), 100);
        assert_eq!(round_up_readable_ms(101.0), 150);
        assert_eq!(round_up_readable_ms(930.0), 950);
        assert_eq!(round_up_readable_ms(1_000.0), 1_000);
        assert_eq!(round_up_readable_ms(1_234.0), 1_300);
        assert_eq!(round_up_readable_ms(12_001.0), 13_000);
        assert_eq!(round_up_readable_ms(f64::NAN), 10);
        assert_eq!(round_up_readable_ms(-5.0), 10);
    }

    #[test]
    fn confidence_follows_the_tail_sample() {
        assert_eq!(Confidence::for_quantile(300, 0.999), Confidence::Low);
        assert_eq!(Confidence::for_quantile(1_000, 0.999), Confidence::Medium);
        assert_eq!(Confidence::for_quantile(10_000, 0.999), Confidence::High);
        assert_eq!(Confidence::for_quantile(1_000, 0.99), Confidence::High);
        assert_eq!(Confidence::for_rate(99), Confidence::Low);
        assert_eq!(Confidence::for_rate(5_000), Confidence::High);
    }
}

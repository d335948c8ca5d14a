//! Order statistics of repeated measurements.

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let sorted = sorted(values);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The lowest of `values`. For the CPU time of a fixed piece of work,
/// other load on the machine (a neighbour on the shared cache) only ever
/// adds, so the lowest round is the least disturbed.
pub fn lowest(values: &[f64]) -> f64 {
    sorted(values)[0]
}

/// The `p`-th percentile (0 to 100) of `values`, nearest-rank: a value
/// that was actually measured.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let sorted = sorted(values);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(values: &[f64]) -> Vec<f64> {
    assert!(!values.is_empty(), "no measurements");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn lowest_of_unsorted_values() {
        assert_eq!(lowest(&[3.0, 1.5, 2.0]), 1.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 500.0);
        assert_eq!(percentile(&values, 99.0), 990.0);
        assert_eq!(percentile(&values, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}

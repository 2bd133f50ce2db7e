//! Medians, ratios and markdown tables.

use std::fmt::Write as _;
use std::time::Duration;

/// The machine, for the report header: logical CPUs and the CPU model from `/proc/cpuinfo`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} logical CPUs (nproc), {model}")
}

/// Median of `values` (mean of the two middle values for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Median of durations.
pub fn median_duration(values: &[Duration]) -> Duration {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    let m = median(&secs);
    if m.is_nan() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(m)
    }
}

/// Per-round ratios `subject[i] / baseline[i]` (both measured in round `i`), then their median.
pub fn median_ratio(subject: &[f64], baseline: &[f64]) -> f64 {
    let ratios: Vec<f64> = subject.iter().zip(baseline).map(|(s, b)| s / b).collect();
    median(&ratios)
}

/// Round-robin order for round `round`: forward on even rounds, reversed on odd ones, so drift
/// during a round (thermal, other load on the machine) hits every subject on both sides.
pub fn round_order(len: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// `1.234 µs`, `12.3 ms`, ... with three significant digits.
pub fn fmt_duration(d: Duration) -> String {
    fmt_seconds(d.as_secs_f64())
}

/// Seconds (fractional) formatted like [`fmt_duration`], keeping sub-nanosecond precision.
pub fn fmt_seconds(seconds: f64) -> String {
    let ns = seconds * 1e9;
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", sig3(value))
}

/// A ratio as `1.02×`.
pub fn fmt_ratio(ratio: f64) -> String {
    format!("{ratio:.2}×")
}

/// Bytes as `12.3 MiB` / `456 KiB` / `789 B`.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{} MiB", sig3(b / (1024.0 * 1024.0)))
    } else if b >= 1024.0 {
        format!("{} KiB", sig3(b / 1024.0))
    } else {
        format!("{bytes} B")
    }
}

/// Requests per second, rounded.
pub fn fmt_rate(rate: f64) -> String {
    format!("{rate:.0}")
}

fn sig3(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A markdown table.
#[derive(Clone, Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells are left empty).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    /// The table as GitHub-flavoured markdown.
    pub fn to_markdown(&self) -> String {
        let columns = self.headers.len();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            out.push('|');
            for i in 0..columns {
                let _ = write!(out, " {} |", cells.get(i).map_or("", String::as_str));
            }
            out.push('\n');
        };
        line(&mut out, &self.headers);
        out.push('|');
        for _ in 0..columns {
            out.push_str(" --- |");
        }
        out.push('\n');
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        // Per-round ratios 2, 1, 3 -> median 2 (not the ratio of medians, 2/1.5).
        assert_eq!(median_ratio(&[4.0, 2.0, 3.0], &[2.0, 2.0, 1.0]), 2.0);
        assert_eq!(round_order(3, 0), vec![0, 1, 2]);
        assert_eq!(round_order(3, 1), vec![2, 1, 0]);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_duration(Duration::from_nanos(1234)), "1.23 µs");
        assert_eq!(fmt_duration(Duration::from_millis(52)), "52.0 ms");
        assert_eq!(fmt_bytes(3 * 1024 * 1024 / 2), "1.50 MiB");
        assert_eq!(fmt_ratio(0.987), "0.99×");
        let mut table = Table::new(["a", "b"]);
        table.row(["1"]);
        assert_eq!(table.to_markdown(), "| a | b |\n| --- | --- |\n| 1 |  |\n");
    }
}

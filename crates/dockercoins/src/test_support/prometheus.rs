//! Reading the Prometheus text that `/metrics` answers.

/// The value of the sample `series` (name and labels exactly as rendered,
/// e.g. `worker_units_total` or `http_requests_total{route="/",method="GET",status="200"}`)
/// in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

/// The metric names that have a `# TYPE` line in Prometheus text.
pub fn metric_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The metrics in Prometheus text that are missing from [`crate::metrics::METRICS`].
pub fn undocumented_metrics(text: &str) -> Vec<String> {
    metric_names(text)
        .into_iter()
        .filter(|name| !crate::metrics::METRICS.iter().any(|m| m.name == name))
        .collect()
}

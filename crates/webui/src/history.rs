//! What the page shows, worked out from what the sampler read in Redis.
//!
//! Pure bookkeeping, no I/O, so that every figure on the page can be tested
//! with made-up readings:
//! - the mining speed: the slope of the `hashes` counter over the last
//!   [`SPEED_WINDOW`], by least squares over readings taken four times a
//!   second. Workers add to the counter once a second, so the difference of
//!   two readings a second apart jumps between 0, 1 and 2 flushes (the classic
//!   page's 4-4-0-4 line); a slope over ten seconds of readings does not;
//! - one point per second of that speed, for the last [`KEEP`];
//! - the cluster: each worker's rate and the rng and hasher instances that
//!   answered it, from the reports the workers write to Redis.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// How much of the speed's past the page gets when it opens.
pub const KEEP: f64 = 300.0;
/// The counter's readings that one speed figure is worked out from.
pub const SPEED_WINDOW: f64 = 10.0;
/// The reports that a worker's rate and the instances' shares come from.
pub const CLUSTER_WINDOW: f64 = 10.0;
/// A worker silent this long has stopped (it reports every second).
pub const STALE_AFTER: f64 = 3.0;
/// A worker or instance silent this long leaves the page.
pub const FORGET_AFTER: f64 = 30.0;

/// What a worker writes to `dockercoins:report:<INSTANCE>` every second.
pub use dockercoins::redis::Report;

/// The page's picture of now: what `/history` ends with and what
/// `/events` sends every second.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Status {
    /// Unix seconds, by the webui's clock.
    pub time: f64,
    /// Why Redis could not be read, while it cannot.
    pub redis_error: Option<String>,
    pub hashes: Option<u64>,
    pub coins: Option<u64>,
    /// Hashes per second, smoothed over [`SPEED_WINDOW`].
    pub speed: Option<f64>,
    /// Seconds since `hashes` last grew.
    pub last_hash_age: Option<f64>,
    pub workers: Vec<Worker>,
    pub rng: Vec<Instance>,
    pub hasher: Vec<Instance>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Worker {
    pub name: String,
    /// Units per second over [`CLUSTER_WINDOW`]; 0 once stale; none until
    /// two reports have been seen.
    pub speed: Option<f64>,
    pub units: u64,
    pub coins: u64,
    /// Seconds since its last new report.
    pub age: f64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    /// Answers per second, from all workers, over [`CLUSTER_WINDOW`].
    pub rate: f64,
    /// Its part of all the answers of its kind, 0 to 1.
    pub share: f64,
    /// Seconds since it last answered.
    pub age: f64,
}

/// The speed, once a second, for the chart.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub time: Vec<f64>,
    pub speed: Vec<Option<f64>>,
}

/// A report, and when the webui first saw it (its age is measured by the
/// webui's clock, so workers on hosts with a wrong clock still fade right).
#[derive(Debug, Clone)]
struct Seen {
    at: f64,
    report: Report,
}

#[derive(Debug, Default)]
pub struct History {
    /// `(time, hashes)`, four a second, over [`SPEED_WINDOW`].
    readings: VecDeque<(f64, u64)>,
    coins: Option<u64>,
    last_hash: Option<f64>,
    redis_error: Option<String>,
    /// One point a second, over [`KEEP`].
    points: VecDeque<(f64, Option<f64>)>,
    /// Each worker's distinct reports over [`FORGET_AFTER`], oldest first.
    workers: BTreeMap<String, Vec<Seen>>,
    status: Option<Status>,
}

impl History {
    /// Records one reading of the counters (`hashes`, coins), or why there is none.
    pub fn read_counters(&mut self, time: f64, counters: Result<(u64, u64), String>) {
        match counters {
            Ok((hashes, coins)) => {
                self.redis_error = None;
                self.coins = Some(coins);
                match self.readings.back() {
                    // The counter went back (Redis emptied): start again.
                    Some(&(_, last)) if hashes < last => self.readings.clear(),
                    Some(&(_, last)) if hashes > last => self.last_hash = Some(time),
                    _ => {}
                }
                self.readings.push_back((time, hashes));
            }
            Err(err) => self.redis_error = Some(err),
        }
        while self
            .readings
            .front()
            .is_some_and(|&(t, _)| t < time - SPEED_WINDOW)
        {
            self.readings.pop_front();
        }
    }

    /// Adds the second's point and the workers' reports, and works out the
    /// new [`Status`].
    pub fn add_point(&mut self, time: f64, reports: Vec<Report>) -> &Status {
        let redis_ok = self.redis_error.is_none();
        let speed = if redis_ok { self.speed() } else { None };
        self.points.push_back((time, speed));
        while self.points.front().is_some_and(|&(t, _)| t < time - KEEP) {
            self.points.pop_front();
        }
        for report in reports {
            self.add_report(time, report);
        }
        self.workers.retain(|_, seen| {
            seen.retain(|s| s.at >= time - FORGET_AFTER);
            !seen.is_empty()
        });
        let (workers, rng, hasher) = self.cluster(time);
        self.status.insert(Status {
            time,
            redis_error: self.redis_error.clone(),
            hashes: self.readings.back().map(|&(_, h)| h).filter(|_| redis_ok),
            coins: self.coins.filter(|_| redis_ok),
            speed,
            last_hash_age: self.last_hash.map(|t| (time - t).max(0.0)),
            workers,
            rng,
            hasher,
        })
    }

    /// The latest status, if a point was added yet.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    pub fn series(&self) -> Series {
        Series {
            time: self.points.iter().map(|&(t, _)| t).collect(),
            speed: self.points.iter().map(|&(_, s)| s).collect(),
        }
    }

    /// The least-squares slope of the readings, in hashes per second, once
    /// they span two seconds.
    fn speed(&self) -> Option<f64> {
        let (first, last) = (self.readings.front()?.0, self.readings.back()?.0);
        if last - first < 2.0 {
            return None;
        }
        let n = self.readings.len() as f64;
        let mean_t = self.readings.iter().map(|&(t, _)| t - first).sum::<f64>() / n;
        let mean_h = self.readings.iter().map(|&(_, h)| h as f64).sum::<f64>() / n;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for &(t, h) in &self.readings {
            let dt = t - first - mean_t;
            covariance += dt * (h as f64 - mean_h);
            variance += dt * dt;
        }
        (variance > 0.0).then(|| (covariance / variance).max(0.0))
    }

    fn add_report(&mut self, time: f64, report: Report) {
        let seen = self.workers.entry(report.instance.clone()).or_default();
        match seen.last() {
            Some(last) if last.report.time == report.time => return,
            // Fewer units than before: the worker started again.
            Some(last) if report.units < last.report.units => seen.clear(),
            _ => {}
        }
        seen.push(Seen { at: time, report });
    }

    fn cluster(&self, now: f64) -> (Vec<Worker>, Vec<Instance>, Vec<Instance>) {
        let mut workers = Vec::new();
        let mut rng = Answers::default();
        let mut hasher = Answers::default();
        for (name, seen) in &self.workers {
            let Some(newest) = seen.last() else { continue };
            let age = (now - newest.at).max(0.0);
            let oldest = seen
                .iter()
                .find(|s| s.report.time >= newest.report.time - CLUSTER_WINDOW)
                .unwrap_or(newest);
            let span = newest.report.time - oldest.report.time;
            let speed = if age > STALE_AFTER {
                Some(0.0)
            } else if span > 0.0 {
                Some(newest.report.units.saturating_sub(oldest.report.units) as f64 / span)
            } else {
                None
            };
            if age <= STALE_AFTER && span > 0.0 {
                rng.add_rates(&oldest.report.rng, &newest.report.rng, span);
                hasher.add_rates(&oldest.report.hasher, &newest.report.hasher, span);
            }
            for pair in seen.windows(2) {
                rng.add_seen(&pair[0].report.rng, &pair[1].report.rng, pair[1].at);
                hasher.add_seen(&pair[0].report.hasher, &pair[1].report.hasher, pair[1].at);
            }
            workers.push(Worker {
                name: name.clone(),
                speed,
                units: newest.report.units,
                coins: newest.report.coins,
                age,
            });
        }
        (workers, rng.instances(now), hasher.instances(now))
    }
}

/// The answers of one kind of dependency (rng or hasher), by instance.
#[derive(Default)]
struct Answers {
    rate: BTreeMap<String, f64>,
    last_seen: BTreeMap<String, f64>,
}

impl Answers {
    fn add_rates(&mut self, old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>, span: f64) {
        for (instance, &count) in new {
            let before = old.get(instance).copied().unwrap_or(0);
            *self.rate.entry(instance.clone()).or_default() +=
                count.saturating_sub(before) as f64 / span;
        }
    }

    fn add_seen(&mut self, old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>, at: f64) {
        for (instance, &count) in new {
            if count > old.get(instance).copied().unwrap_or(0) {
                let last = self.last_seen.entry(instance.clone()).or_insert(at);
                *last = last.max(at);
            }
        }
    }

    fn instances(self, now: f64) -> Vec<Instance> {
        let total: f64 = self.rate.values().sum();
        self.last_seen
            .into_iter()
            .filter(|&(_, at)| now - at <= FORGET_AFTER)
            .map(|(name, at)| {
                let rate = self.rate.get(&name).copied().unwrap_or(0.0);
                Instance {
                    share: if total > 0.0 { rate / total } else { 0.0 },
                    rate,
                    age: (now - at).max(0.0),
                    name,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(instance: &str, time: f64, units: u64, rng: &[(&str, u64)]) -> Report {
        Report {
            instance: instance.to_owned(),
            process: String::new(),
            time,
            units,
            coins: units / 16,
            rng: rng.iter().map(|&(n, c)| (n.to_owned(), c)).collect(),
            hasher: BTreeMap::from([("hasher-1".to_owned(), units)]),
        }
    }

    /// Workers doing `rate` units a second each, flushing once a second at
    /// the very moment the counter is read (the classic page's worst case),
    /// with a few milliseconds of jitter either way.
    fn staircase(workers: u32, rate: f64, seconds: u32) -> Vec<f64> {
        let mut history = History::default();
        let mut speeds = Vec::new();
        let jitter = |i: u32| (((i * 7919) % 13) as f64 - 6.0) / 300.0;
        for tick in 0..seconds * 4 {
            let time = 1000.0 + tick as f64 / 4.0;
            let flushes = |w: u32| {
                let flush_time = |k: u32| 1000.0 + k as f64 + jitter(k * 31 + w);
                let done = (0..=seconds).rfind(|&k| flush_time(k) <= time);
                done.map_or(0, |k| (k as f64 * rate).floor() as u64)
            };
            let hashes = (0..workers).map(flushes).sum();
            history.read_counters(time, Ok((hashes, 0)));
            if tick % 4 == 0 {
                speeds.push(history.add_point(time, Vec::new()).speed);
            }
        }
        speeds
            .into_iter()
            .skip(12)
            .map(|s| s.expect("a speed"))
            .collect()
    }

    #[test]
    fn the_speed_hides_the_once_a_second_flush() {
        for (workers, rate) in [(1, 3.33), (2, 3.33), (10, 1.0)] {
            let expected = workers as f64 * rate;
            for speed in staircase(workers, rate, 60) {
                assert!(
                    (speed - expected).abs() <= expected * 0.1,
                    "{workers} workers at {rate}/s: {speed:.2} hashes/s"
                );
            }
        }
    }

    #[test]
    fn no_speed_until_two_seconds_of_readings_then_a_point_a_second() {
        let mut history = History::default();
        history.read_counters(10.0, Ok((0, 0)));
        assert_eq!(history.add_point(10.0, Vec::new()).speed, None);
        for i in 1..=12 {
            history.read_counters(10.0 + i as f64, Ok((i * 5, 1)));
            history.add_point(10.0 + i as f64, Vec::new());
        }
        let status = history.status().expect("a status");
        assert_eq!(status.hashes, Some(60));
        assert_eq!(status.coins, Some(1));
        assert_eq!(status.last_hash_age, Some(0.0));
        assert!((status.speed.expect("a speed") - 5.0).abs() < 1e-9);
        let series = history.series();
        assert_eq!(series.time.len(), 13);
        assert_eq!(series.speed[0..2], [None, None]);
    }

    #[test]
    fn keeps_five_minutes_of_points() {
        let mut history = History::default();
        for i in 0..400 {
            history.read_counters(i as f64, Ok((i, 0)));
            history.add_point(i as f64, Vec::new());
        }
        let series = history.series();
        assert_eq!(series.time.len(), 301);
        assert_eq!(series.time[0], 99.0);
    }

    #[test]
    fn a_counter_that_goes_back_starts_the_speed_again() {
        let mut history = History::default();
        for i in 0..10 {
            history.read_counters(i as f64, Ok((1000 + i * 10, 0)));
        }
        history.read_counters(10.0, Ok((0, 0)));
        assert_eq!(history.add_point(10.0, Vec::new()).speed, None);
    }

    #[test]
    fn redis_down_leaves_a_gap_and_an_error_then_recovers() {
        let mut history = History::default();
        for i in 0..5 {
            history.read_counters(i as f64, Ok((i * 3, 0)));
        }
        history.read_counters(5.0, Err("connection refused".to_owned()));
        let status = history.add_point(5.0, Vec::new()).clone();
        assert_eq!(status.redis_error.as_deref(), Some("connection refused"));
        assert_eq!(
            (status.speed, status.hashes, status.coins),
            (None, None, None)
        );
        assert_eq!(status.last_hash_age, Some(1.0));
        history.read_counters(6.0, Ok((18, 0)));
        let status = history.add_point(6.0, Vec::new());
        assert_eq!(status.redis_error, None);
        assert_eq!(status.hashes, Some(18));
        assert!(status.speed.is_some());
    }

    #[test]
    fn workers_rates_and_the_instances_shares() {
        let mut history = History::default();
        for i in 0..12u64 {
            let t = 100.0 + i as f64;
            let reports = vec![
                // Three units a second, rng-a and rng-b in turn.
                report("w1", t + 0.3, 3 * i, &[("rng-a", 2 * i), ("rng-b", i)]),
                report("w2", t + 0.6, 4 * i, &[("rng-a", 4 * i)]),
            ];
            history.add_point(t, reports);
        }
        let status = history.status().expect("a status");
        let speeds: Vec<_> = status
            .workers
            .iter()
            .map(|w| (w.name.as_str(), w.speed))
            .collect();
        assert_eq!(speeds, [("w1", Some(3.0)), ("w2", Some(4.0))]);
        let rng: Vec<_> = status
            .rng
            .iter()
            .map(|i| (i.name.as_str(), i.rate, i.share))
            .collect();
        assert_eq!(rng, [("rng-a", 6.0, 6.0 / 7.0), ("rng-b", 1.0, 1.0 / 7.0)]);
        assert_eq!(status.hasher.len(), 1);
        assert_eq!(status.hasher[0].share, 1.0);
    }

    #[test]
    fn silent_workers_and_instances_fade_then_go() {
        let mut history = History::default();
        for i in 0..5u64 {
            let t = i as f64;
            history.add_point(t, vec![report("w1", t, i, &[("rng-a", i)])]);
        }
        // w1 stops: its report stays in Redis for 10 s, unchanged.
        history.add_point(6.0, vec![report("w1", 4.0, 4, &[("rng-a", 4)])]);
        let status = history.status().expect("a status").clone();
        assert_eq!(status.workers[0].age, 2.0);
        assert_eq!(status.workers[0].speed, Some(1.0));
        history.add_point(8.0, vec![]);
        let status = history.status().expect("a status").clone();
        assert_eq!(status.workers[0].speed, Some(0.0), "stale");
        assert_eq!(status.rng[0].rate, 0.0);
        assert_eq!(status.rng[0].age, 4.0);
        history.add_point(4.0 + FORGET_AFTER + 1.0, vec![]);
        let status = history.status().expect("a status");
        assert!(status.workers.is_empty() && status.rng.is_empty());
    }

    #[test]
    fn a_restarted_worker_starts_its_rate_again() {
        let mut history = History::default();
        history.add_point(0.0, vec![report("w1", 0.0, 500, &[])]);
        history.add_point(1.0, vec![report("w1", 1.0, 503, &[])]);
        history.add_point(2.0, vec![report("w1", 2.0, 2, &[])]);
        assert_eq!(history.status().expect("a status").workers[0].speed, None);
        history.add_point(3.0, vec![report("w1", 3.0, 5, &[])]);
        assert_eq!(
            history.status().expect("a status").workers[0].speed,
            Some(3.0)
        );
    }
}

//! The agent process's own CPU time, memory, file descriptors and start time, under the names
//! every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` at each scrape. Linux only
//! (prometheus-client has no process collector); elsewhere these metrics are absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's USER_HZ, which is 100 on every
/// architecture Linux exposes to user space through /proc (it is part of the ABI, whatever
/// the kernel's internal HZ).
const USER_HZ: f64 = 100.0;

/// What one read of `/proc/self` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
}

/// Fields of `/proc/self/stat` after the command name (which may contain spaces and
/// parentheses, so the split is at the last `)`): `(state, utime, stime, num_threads,
/// starttime, vsize, rss pages)` by their positions in proc(5).
fn parse_stat(stat: &str) -> Option<(f64, u64, u64, f64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers fields from 1; `state` is field 3, the first after the name.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu = (field(14)? + field(15)?) as f64 / USER_HZ;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    Some((cpu, threads, vsize, start_ticks as f64 / USER_HZ))
}

/// `VmRSS:    1234 kB` from `/proc/self/status`, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// The soft `Max open files` limit from `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl ProcessStats {
    /// Read `/proc/self`; `None` when it cannot be read (not Linux, /proc not mounted).
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (cpu_seconds, threads, virtual_bytes, start_since_boot) = parse_stat(&stat)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s))
            .unwrap_or(0.0);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(Self {
            cpu_seconds,
            resident_bytes: parse_rss(&status).unwrap_or(0),
            virtual_bytes,
            start_time_seconds: boot + start_since_boot,
            open_fds,
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| parse_max_fds(&l)),
            threads,
        })
    }
}

/// Registered on the root registry (no `ferry_` prefix) by [`crate::metrics::Metrics::new`].
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(stats.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                stats.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                stats.open_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads",
                stats.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(max) = stats.max_fds {
            let gauge = ConstGauge::new(max as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_past_a_name_with_spaces_and_parens() {
        // A real line's shape (proc(5)); the command name "a b) c" contains ") ".
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let (cpu, threads, vsize, start) = parse_stat(stat).expect("parses");
        assert!(
            (cpu - 3.0).abs() < 1e-9,
            "utime 250 + stime 50 ticks = 3 s, got {cpu}"
        );
        assert_eq!(threads, 7);
        assert_eq!(vsize, 104_857_600);
        assert!((start - 123.45).abs() < 1e-9);
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1764676800\n"),
            Some(1_764_676_800.0)
        );
        assert_eq!(
            parse_max_fds(
                "Limit Soft Hard Units\nMax open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
    }

    /// The numbers of this very test process are plausible: it has run, uses memory and files.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let stats = ProcessStats::read().expect("/proc/self is readable");
        assert!(stats.resident_bytes > 1024 * 1024, "{stats:?}");
        assert!(stats.open_fds >= 3, "{stats:?}");
        assert!(stats.threads >= 1, "{stats:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            stats.start_time_seconds <= now + 1.0
                && stats.start_time_seconds > now - 86_400.0 * 365.0,
            "{stats:?}"
        );
    }
}

//! Health checks: while a box runs, its shim runs the box's check command in
//! it every interval, through the guest's exec port as `exec` does, and keeps
//! the outcome in the box's state (`State.Health` in `inspect`, `(healthy)`
//! in `ps`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{Health, HealthCheck, HealthResult};
use super::shim::connect_guest;
use super::{BoxConfig, Status, Store};
use crate::proto::{exec_client, ExecRequest, Message, PORT_EXEC};

/// Most bytes of a check's output kept, as Docker.
const OUTPUT_LIMIT: usize = 4096;

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration as Go prints it: `30s`, `1m30s`, `1.5s`, `500ms`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let secs = if s % 1000 == 0 {
        format!("{}s", s / 1000)
    } else {
        format!("{}s", s as f64 / 1000.0)
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Runs the check once in the running box and says how it went.
pub fn probe(store: &Store, cfg: &BoxConfig, check: &HealthCheck) -> HealthResult {
    let start_ms = epoch_ms();
    let timeout = Duration::from_millis(check.timeout_ms);
    let req = Message::Exec(ExecRequest {
        argv: check.argv.clone(),
        env: cfg.env.clone(),
        cwd: cfg.workdir.clone(),
        user: cfg.user.clone(),
        tty: false,
        rows: 0,
        cols: 0,
        stdin: false,
    });
    let mut output = Vec::new();
    let outcome = connect_guest(&store.socket_dir(&cfg.id), PORT_EXEC).and_then(|conn| {
        conn.set_read_timeout(Some(timeout))?;
        let writer = conn.try_clone()?;
        exec_client(conn, writer, &req, None, |_, d| {
            let room = OUTPUT_LIMIT.saturating_sub(output.len());
            output.extend_from_slice(&d[..d.len().min(room)]);
            Ok(())
        })
        .map_err(std::io::Error::other)
    });
    let (exit_code, text) = match outcome {
        Ok(o) => (o.code, String::from_utf8_lossy(&output).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) || e.to_string().contains("timed out")
                || e.to_string().contains("temporarily unavailable") =>
        {
            (
                -1,
                format!("Health check exceeded timeout ({})", go_duration(timeout)),
            )
        }
        Err(e) => (-1, format!("cannot run the health check: {e}")),
    };
    HealthResult {
        start_ms,
        end_ms: epoch_ms(),
        exit_code,
        output: text,
    }
}

/// Checks box `cfg` until `ended()` says its main process is gone; `wait`
/// sleeps up to the given time and says whether the box ended meanwhile.
/// `changed` hears each new health status (for events).
pub fn run(
    store: &Store,
    cfg: &BoxConfig,
    check: &HealthCheck,
    wait: &dyn Fn(Duration) -> bool,
    changed: &dyn Fn(&str),
) {
    let began = Instant::now();
    let update = |f: &mut dyn FnMut(&mut Health)| -> Option<String> {
        let _lock = store.lock().ok()?;
        let mut st = store.state(&cfg.id).ok()?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return None;
        }
        let mut h = st.health.take().unwrap_or_else(|| Health {
            status: "starting".into(),
            ..Health::default()
        });
        f(&mut h);
        let status = h.status.clone();
        st.health = Some(h);
        store.write_state(&cfg.id, &st).ok()?;
        Some(status)
    };
    // A new run starts over.
    if update(&mut |h| {
        *h = Health {
            status: "starting".into(),
            ..Health::default()
        }
    })
    .is_none()
    {
        return;
    }
    let mut last = "starting".to_string();
    loop {
        if wait(Duration::from_millis(check.interval_ms)) {
            return;
        }
        // A frozen box cannot answer; Docker skips its checks too.
        if store
            .state(&cfg.id)
            .is_ok_and(|st| st.status == Status::Paused)
        {
            continue;
        }
        let result = probe(store, cfg, check);
        let in_start_period = began.elapsed() < Duration::from_millis(check.start_period_ms);
        let Some(now) = update(&mut |h| {
            let counts = !in_start_period || h.status != "starting";
            h.record(result.clone(), check.retries, counts);
        }) else {
            return;
        };
        if now != last {
            changed(&now);
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}

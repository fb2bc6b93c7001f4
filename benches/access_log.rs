//! The access log line, per request: before (a tracing event through tracing-subscriber's
//! JSON formatter, written to the file line by line as the old stdout writer did) and after
//! (`telemetry::format_json` into a reused buffer, handed to the non-blocking writer thread).
//! Both write to /dev/null, so the syscall is in the "before" number and the writer thread's
//! work is off the measured thread in the "after" one, as on the data path.
//!
//! - `access/format_tracing_json`, `access/format_direct`: formatting alone (into memory);
//! - `access/write_tracing_json_sync`, `access/write_direct_non_blocking`: formatting + writing.
//!
//! Run: `cargo bench --bench access_log -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sigv4_sidecar::telemetry::{access_event, format_json, non_blocking, AccessLine};

fn line() -> AccessLine<'static> {
    AccessLine {
        route: "default",
        method: "GET",
        path: "/Prod/hello-world",
        status: 200,
        duration: Duration::from_micros(1834),
        upstream: Some(Duration::from_micros(1602)),
        bytes_in: 0,
        bytes_out: 1342,
        error: None,
        outcome: "complete",
    }
}

fn tracing_json<W>(make: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(make)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .finish()
}

fn bench_access(c: &mut Criterion) {
    let l = line();
    let mut g = c.benchmark_group("access");
    g.throughput(Throughput::Elements(1));

    tracing::subscriber::with_default(tracing_json(std::io::sink), || {
        g.bench_function("format_tracing_json", |b| {
            b.iter(|| access_event(black_box(&l)))
        });
    });
    let mut buf = Vec::with_capacity(512);
    g.bench_function("format_direct", |b| {
        b.iter(|| {
            buf.clear();
            format_json(&mut buf, black_box(&l));
        })
    });

    let devnull = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .expect("/dev/null")
    };
    static FILE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let file: &'static std::fs::File = FILE.get_or_init(devnull);
    // As the old `with_writer(std::io::stdout)`: one write(2) per line.
    tracing::subscriber::with_default(tracing_json(move || file), || {
        g.bench_function("write_tracing_json_sync", |b| {
            b.iter(|| access_event(black_box(&l)))
        });
    });
    let (writer, guard) = non_blocking(devnull());
    g.bench_function("write_direct_non_blocking", |b| {
        b.iter(|| {
            buf.clear();
            format_json(&mut buf, black_box(&l));
            writer.clone().write_all(&buf).expect("queued");
        })
    });
    drop(guard);
    g.finish();
}

// Criterion's default timings; the run line above shortens them.
criterion_group!(benches, bench_access);
criterion_main!(benches);

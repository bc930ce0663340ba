//! Range parsing and resolution, for the headers browsers send.
use criterion::{criterion_group, criterion_main, Criterion};
use recordings_backend::range::{decide, if_range_holds};

fn ranges(c: &mut Criterion) {
    let abusive = format!("bytes={}", vec!["1-2"; 5000].join(","));
    for (name, header) in [
        ("bytes=0-", "bytes=0-"),
        ("bytes=-500", "bytes=-500"),
        ("bytes=0-999", "bytes=0-999"),
        ("5000 ranges", abusive.as_str()),
    ] {
        c.bench_function(&format!("decide {name}"), |b| {
            b.iter(|| decide(Some(std::hint::black_box(header)), 100_000_000))
        });
    }
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    c.bench_function("if_range_holds etag", |b| {
        b.iter(|| if_range_holds(Some("\"RE1-mp3-100\""), "\"RE1-mp3-100\"", t))
    });
}

criterion_group!(benches, ranges);
criterion_main!(benches);

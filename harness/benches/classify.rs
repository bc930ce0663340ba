//! nginx error-log classification, line by line (what `harness explain` does to a big log).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn classify(c: &mut Criterion) {
    let lines = [
        "2026/11/25 10:00:00 [error] 12#12: *3 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:40123/webhook/recording-status\", host: \"127.0.0.1:39999\"",
        "2026/11/25 10:00:00 [info] 12#12: *4 client closed keepalive connection",
        "2026/11/25 10:00:00 [error] 12#12: *5 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1",
    ];
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("3 lines", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter_map(|l| harness::classify(std::hint::black_box(l)))
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);

//! Generated media: how fast any slice is produced (it bounds mock-twilio's media rate).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mock_twilio::{Media, MediaFormat};

fn fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("media fill 1 MiB");
    group.throughput(Throughput::Bytes(1 << 20));
    for format in [MediaFormat::Mp3, MediaFormat::Wav] {
        let media = Media::new("RE00000000000000000000000000000001", format, 200_000_000);
        let mut buf = vec![0u8; 1 << 20];
        group.bench_function(format.extension(), |b| {
            b.iter(|| media.fill(12_345_678, &mut buf))
        });
    }
    group.finish();
}

criterion_group!(benches, fill);
criterion_main!(benches);

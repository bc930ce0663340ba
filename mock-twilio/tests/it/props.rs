//! Properties of the generated media: deterministic, and any slice (however it is cut into
//! reads) equals that slice of the whole.

use mock_twilio::{Media, MediaFormat};
use proptest::prelude::*;

fn format() -> impl Strategy<Value = MediaFormat> {
    prop_oneof![Just(MediaFormat::Mp3), Just(MediaFormat::Wav)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn media_is_deterministic_and_any_slice_is_the_slice_of_the_whole(
        fmt in format(),
        size in 0u64..200_000,
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        chunk in 1usize..5000,
        sid in "RE[0-9a-f]{4}",
    ) {
        let media = Media::new(&sid, fmt, size);
        let whole = media.to_vec();
        prop_assert_eq!(whole.len() as u64, size);
        prop_assert_eq!(Media::new(&sid, fmt, size).to_vec(), whole.clone(), "deterministic");
        if size > 0 {
            let (x, y) = (a.index(size as usize), b.index(size as usize));
            let (start, end) = (x.min(y) as u64, x.max(y) as u64 + 1);
            prop_assert_eq!(&media.slice(start..end)[..], &whole[start as usize..end as usize]);
            // The same slice read in arbitrary chunks, as a server streams it.
            let mut pieces = Vec::new();
            let mut at = start;
            while at < end {
                let mut buf = vec![0u8; chunk.min((end - at) as usize)];
                media.fill(at, &mut buf);
                at += buf.len() as u64;
                pieces.extend_from_slice(&buf);
            }
            prop_assert_eq!(&pieces[..], &whole[start as usize..end as usize]);
        }
    }
}

//! The recording-status webhook: only Twilio-signed callbacks are believed, and a completed
//! recording is pre-downloaded so the first Play is a cache hit.

use crate::support::{client, get_body, media_requests, stack};
use mock_twilio::{sid, MediaFormat, Recording, Signing};

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_callback_stores_and_pre_downloads() {
    let (twilio, rec, backend) = stack(30_000).await;
    let resp = twilio
        .send_status_callback(
            &backend.url("/webhook/recording-status"),
            &rec,
            Signing::Valid,
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    backend.wait_log("Recording saved - took").await;
    assert_eq!(backend.cached_files(), [format!("{}.mp3", rec.sid)]);
    let before = twilio.journal().len();
    let body = get_body(backend.download_url(&rec.call_sid)).await;
    assert_eq!(body, rec.media(MediaFormat::Mp3).to_vec());
    assert_eq!(
        twilio.journal().len(),
        before,
        "the first Play made no Twilio request at all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_and_forged_callbacks_are_403_and_store_nothing() {
    let (twilio, _rec, backend) = stack(30_000).await;
    // A recording the backend could only learn of through the webhook.
    let other = Recording::new(sid("RE", 2), sid("CA", 2), MediaFormat::Mp3, 1000);
    for signing in [Signing::Unsigned, Signing::Forged] {
        let resp = twilio
            .send_status_callback(&backend.url("/webhook/recording-status"), &other, signing)
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{signing:?}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["error"], "Invalid Twilio signature");
    }
    assert_eq!(media_requests(&twilio), 0);
    assert!(backend.cached_files().is_empty());
    let resp = client()
        .get(backend.download_url(&other.call_sid))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "nothing was stored for the call");
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_are_checked_against_public_url() {
    let twilio = mock_twilio::MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        1000,
    ));
    let backend = crate::support::Backend::start_with(
        &twilio,
        &[("PUBLIC_URL", "https://calls.example.com")],
    );
    let callback = twilio.status_callback(&rec);
    // Signed for the public URL, delivered (through a proxy) to the backend's own address.
    let sig = callback
        .signature(
            "https://calls.example.com/webhook/recording-status",
            twilio.auth_token(),
            Signing::Valid,
        )
        .unwrap();
    let post = |sig: String| {
        client()
            .post(backend.url("/webhook/recording-status"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(callback.body())
            .send()
    };
    assert_eq!(post(sig).await.unwrap().status(), 204);
    let local_sig = callback
        .signature(
            &backend.url("/webhook/recording-status"),
            twilio.auth_token(),
            Signing::Valid,
        )
        .unwrap();
    assert_eq!(post(local_sig).await.unwrap().status(), 403);
}

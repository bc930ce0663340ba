//! The recording-status callback: Twilio's fields, and a signature a receiver can check.

use mock_twilio::signature::verify;
use mock_twilio::{sid, MediaFormat, MockTwilio, Recording, Signing};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn receive(signing: Signing) -> (MockTwilio, wiremock::Request, String) {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 5),
        sid("CA", 5),
        MediaFormat::Mp3,
        20_000,
    ));
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/webhook/recording-status"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&receiver)
        .await;
    let url = format!("{}/webhook/recording-status", receiver.uri());
    let resp = twilio
        .send_status_callback(&url, &rec, signing)
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let request = receiver.received_requests().await.unwrap().remove(0);
    (twilio, request, url)
}

fn params(req: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

#[tokio::test]
async fn a_signed_callback_carries_twilios_fields_and_verifies() {
    let (twilio, req, url) = receive(Signing::Valid).await;
    let p = params(&req);
    let names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "AccountSid",
            "CallSid",
            "RecordingSid",
            "RecordingUrl",
            "RecordingStatus",
            "RecordingDuration",
            "RecordingChannels",
            "RecordingSource",
            "RecordingStartTime"
        ]
    );
    let get = |k: &str| p.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get("RecordingUrl"), twilio.recording_url(&sid("RE", 5)));
    assert_eq!(get("RecordingStatus"), "completed");
    assert_eq!(get("RecordingDuration"), "1");
    let sig = req
        .headers
        .get("x-twilio-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(verify(twilio.auth_token(), &url, &p, sig));
}

#[tokio::test]
async fn a_forged_callback_does_not_verify_and_an_unsigned_one_has_no_header() {
    let (twilio, req, url) = receive(Signing::Forged).await;
    let sig = req
        .headers
        .get("x-twilio-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(!verify(twilio.auth_token(), &url, &params(&req), sig));
    let (_, req, _) = receive(Signing::Unsigned).await;
    assert!(req.headers.get("x-twilio-signature").is_none());
}

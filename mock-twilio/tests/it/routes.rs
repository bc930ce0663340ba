//! The Twilio surface: media, metadata, a call's list, auth, 404.

use crate::support::{basic, client, raw_get};
use mock_twilio::{sid, MediaFormat, MockTwilio, Recording};
use std::time::Duration;

async fn with_recording(format: MediaFormat, size: u64) -> (MockTwilio, Recording) {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(sid("RE", 1), sid("CA", 1), format, size));
    (twilio, rec)
}

#[tokio::test]
async fn media_is_served_byte_exact_in_either_format() {
    let (twilio, rec) = with_recording(MediaFormat::Mp3, 123_457).await;
    for format in [MediaFormat::Mp3, MediaFormat::Wav] {
        let resp = client()
            .get(twilio.media_url(&rec.sid, format))
            .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], format.content_type());
        assert_eq!(resp.headers()["content-length"], "123457");
        let body = resp.bytes().await.unwrap();
        assert!(
            body == rec.media(format).to_vec(),
            "{format:?} body differs"
        );
    }
    let j = twilio.journal();
    assert_eq!(j.len(), 2);
    assert_eq!(j[0].auth.as_deref(), Some("valid"));
    assert_eq!(j[0].status, Some(200));
    assert_eq!(j[0].body_bytes, 123_457);
}

#[tokio::test]
async fn head_announces_the_length_without_a_body() {
    let (twilio, rec) = with_recording(MediaFormat::Wav, 5000).await;
    let resp = client()
        .head(twilio.media_url(&rec.sid, MediaFormat::Wav))
        .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "5000");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn metadata_has_twilios_shape() {
    let (twilio, rec) = with_recording(MediaFormat::Wav, 8044).await;
    for suffix in ["", ".json"] {
        let json: serde_json::Value = client()
            .get(format!("{}{suffix}", twilio.recording_url(&rec.sid)))
            .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(json["sid"], rec.sid);
        assert_eq!(json["call_sid"], rec.call_sid);
        assert_eq!(json["account_sid"], twilio.account_sid());
        assert_eq!(json["status"], "completed");
        assert_eq!(json["duration"], "1");
        assert!(json["date_created"].as_str().unwrap().ends_with("+0000"));
        assert_eq!(
            json["media_url"],
            twilio.media_url(&rec.sid, MediaFormat::Wav)
        );
        assert!(json["uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{}.json", rec.sid)));
    }
}

#[tokio::test]
async fn a_calls_recordings_are_listed_newest_first() {
    let twilio = MockTwilio::start().await.unwrap();
    let call = sid("CA", 9);
    twilio.add_recording(Recording::new(sid("RE", 1), &call, MediaFormat::Mp3, 1000));
    twilio.add_recording(Recording::new(sid("RE", 2), &call, MediaFormat::Mp3, 1000));
    twilio.add_recording(Recording::new(
        sid("RE", 3),
        sid("CA", 8),
        MediaFormat::Mp3,
        1000,
    ));
    let list = |call: String| {
        let twilio = &twilio;
        async move {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Calls/{call}/Recordings.json",
                twilio.uri(),
                twilio.account_sid()
            );
            client()
                .get(url)
                .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let page = list(call.clone()).await;
    let sids: Vec<&str> = page["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sid"].as_str().unwrap())
        .collect();
    assert_eq!(sids, [sid("RE", 2), sid("RE", 1)]);
    assert_eq!(page["page"], 0);
    assert!(page["next_page_uri"].is_null());
    let empty = list(sid("CA", 77)).await;
    assert_eq!(empty["recordings"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn auth_is_required_on_every_route() {
    let (twilio, rec) = with_recording(MediaFormat::Mp3, 1000).await;
    let urls = [
        twilio.media_url(&rec.sid, MediaFormat::Mp3),
        format!("{}.json", twilio.recording_url(&rec.sid)),
        format!(
            "{}/2010-04-01/Accounts/{}/Calls/{}/Recordings.json",
            twilio.uri(),
            twilio.account_sid(),
            rec.call_sid
        ),
    ];
    for url in &urls {
        for creds in [None, Some("wrong-token")] {
            let mut req = client().get(url);
            if let Some(token) = creds {
                req = req.basic_auth(twilio.account_sid(), Some(token));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{url}");
            assert!(resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic"));
            let json: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(json["code"], 20003);
            assert_eq!(json["status"], 401);
            assert!(json["more_info"].as_str().unwrap().contains("20003"));
        }
    }
    let auths: Vec<_> = twilio
        .journal()
        .into_iter()
        .map(|e| e.auth.unwrap())
        .collect();
    assert_eq!(auths, ["missing", "invalid"].repeat(3));
}

#[tokio::test]
async fn unknown_resources_are_404_with_twilios_error() {
    let (twilio, _) = with_recording(MediaFormat::Mp3, 1000).await;
    let other_account = format!(
        "{}/2010-04-01/Accounts/{}/Recordings/{}.mp3",
        twilio.uri(),
        sid("AC", 5),
        sid("RE", 1)
    );
    for url in [
        twilio.media_url(&sid("RE", 404), MediaFormat::Mp3),
        other_account,
        format!("{}/nothing", twilio.uri()),
    ] {
        let resp = client()
            .get(&url)
            .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{url}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["code"], 20404, "{url}");
    }
}

#[tokio::test]
async fn keep_alive_connections_serve_many_requests() {
    let (twilio, rec) = with_recording(MediaFormat::Mp3, 2000).await;
    let c = client();
    for _ in 0..5 {
        let body = c
            .get(twilio.media_url(&rec.sid, MediaFormat::Mp3))
            .basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), 2000);
    }
    // And a raw HTTP/1.1 client sees a well-formed response.
    let raw = raw_get(
        twilio.addr(),
        &format!(
            "/2010-04-01/Accounts/{}/Recordings/{}.mp3",
            twilio.account_sid(),
            rec.sid
        ),
        Some(&basic(&twilio)),
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.head().starts_with("HTTP/1.1 200"), "{}", raw.head());
    assert_eq!(raw.body(), rec.media(MediaFormat::Mp3).to_vec());
}

//! Twilio's request signature (`X-Twilio-Signature`): HMAC-SHA1, keyed by the auth token,
//! over the full URL followed by the POST parameters sorted by name, each as name+value;
//! base64-encoded.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature Twilio would send for a POST of `params` to `url`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// True when `signature` is the one Twilio would send (compared in constant time).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let expected = sign(auth_token, url, params);
    expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn matches_twilios_published_examples() {
        // The example of Twilio's security documentation.
        assert_eq!(
            sign("12345", URL, &params("+12349013030")),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        // The example in Twilio's own helper library tests.
        assert_eq!(
            sign("12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn order_of_params_does_not_matter_but_content_does() {
        let mut p = params("+14158675309");
        p.reverse();
        assert!(verify("12345", URL, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        p[0].1.push('0');
        assert!(!verify("12345", URL, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify(
            "54321",
            URL,
            &params("+14158675309"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }
}

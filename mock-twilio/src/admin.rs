//! The admin API beside the fake (`/__admin`, modelled on WireMock's): add recordings,
//! arm and clear faults, read the journal, reset. Bad input gets a 400 naming the field.

use crate::error::InvalidField;
use crate::fault::FaultRule;
use crate::recording::Recording;
use crate::state::State;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Clone, Copy)]
enum Action {
    AddRecording,
    ListRecordings,
    ArmFault,
    ListFaults,
    ClearFaults,
    Requests,
    Reset,
}

struct Admin(Arc<State>, Action);

pub(crate) async fn mount(server: &MockServer, state: &Arc<State>) {
    let routes = [
        ("POST", "/__admin/recordings", Action::AddRecording),
        ("GET", "/__admin/recordings", Action::ListRecordings),
        ("POST", "/__admin/faults", Action::ArmFault),
        ("GET", "/__admin/faults", Action::ListFaults),
        ("DELETE", "/__admin/faults", Action::ClearFaults),
        ("GET", "/__admin/requests", Action::Requests),
        ("POST", "/__admin/reset", Action::Reset),
    ];
    for (m, p, action) in routes {
        Mock::given(method(m))
            .and(path(p))
            .respond_with(Admin(state.clone(), action))
            .with_priority(1)
            .named(format!("admin {m} {p}"))
            .mount(server)
            .await;
    }
}

/// A 400 whose body names the field at fault.
fn bad_request(e: InvalidField) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(json!({ "error": e.message, "field": e.field }))
}

/// Parses a JSON body, reporting the path of the field at fault (`fault.kind`, `size_bytes`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, InvalidField> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        let message = if inner.to_string().contains("unknown variant") {
            format!("{inner} (fault kinds: {})", crate::Fault::KINDS.join(", "))
        } else {
            inner.to_string()
        };
        InvalidField::new(field, message)
    })
}

impl Respond for Admin {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let state = &self.0;
        match self.1 {
            Action::AddRecording => match parse_json::<Recording>(&request.body)
                .and_then(|rec| state.add(rec.clone()).map(|()| rec))
            {
                Err(e) => bad_request(e),
                Ok(rec) => ResponseTemplate::new(201).set_body_json(rec),
            },
            Action::ListRecordings => ResponseTemplate::new(200)
                .set_body_json(json!({ "recordings": state.recordings() })),
            Action::ArmFault => match parse_json::<FaultRule>(&request.body)
                .and_then(|rule| state.faults.arm(rule))
            {
                Err(e) => bad_request(e),
                Ok(id) => ResponseTemplate::new(201).set_body_json(json!({ "id": id })),
            },
            Action::ListFaults => {
                let faults: Vec<_> = state
                    .faults
                    .list()
                    .into_iter()
                    .map(|(id, rule, remaining)| json!({"id": id, "rule": rule, "remaining": remaining}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({ "faults": faults }))
            }
            Action::ClearFaults => {
                state.faults.clear();
                ResponseTemplate::new(200).set_body_json(json!({ "cleared": true }))
            }
            Action::Requests => ResponseTemplate::new(200).set_body_json(json!({
                "requests": state.journal.entries(),
                "overlaps": state.journal.overlaps(),
            })),
            Action::Reset => {
                state.reset();
                ResponseTemplate::new(200).set_body_json(json!({ "reset": true }))
            }
        }
    }
}

//! The heartbeat secret in Kubernetes mode (issue 14: "the heartbeat
//! secret generated at install, a Secret the user can rotate"). A manifest
//! cannot make randomness, and a secret written into `deploy/` would be
//! every user's, so the first speaker to start creates the Secret with 32
//! random bytes. The API server makes the create atomic: speakers starting
//! at once all end up with the one that won (a loser reads it back).
//! It is read at start only: rotating it is writing a new value and
//! restarting the DaemonSet (docs/k3s.md).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// The key in the Secret's data.
pub const KEY: &str = "secret";

fn kube_err(what: &str, name: &str, e: kube::Error) -> Error {
    Error::Sys {
        op: format!("{what} Secret {name} (the heartbeat secret)"),
        source: std::io::Error::other(e.to_string()),
    }
}

fn value(s: &Secret, name: &str) -> Result<String> {
    let bytes = s
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            Error::config(
                format!("Secret {name}"),
                format!("has no `{KEY}` key; recreate it (docs/k3s.md, the heartbeat Secret)"),
            )
        })?;
    String::from_utf8(bytes).map_err(|_| {
        Error::config(
            format!("Secret {name}"),
            format!("`{KEY}` is not UTF-8 text; use e.g. `head -c 32 /dev/urandom | base64`"),
        )
    })
}

/// The heartbeat secret held in Secret `name`, created with a random value
/// when there is none.
pub async fn ensure(api: &Api<Secret>, name: &str) -> Result<String> {
    if let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| kube_err("read", name, e))?
    {
        return value(&s, name);
    }
    let seed = crate::freshness::random_seed()?;
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([("app.kubernetes.io/name".into(), "flatlan".into())].into()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), ByteString(hex.clone().into_bytes()))].into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = name, "created the heartbeat secret");
            Ok(hex)
        }
        // Another node's speaker created it first: take theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api.get(name).await.map_err(|e| kube_err("read", name, e))?;
            value(&s, name)
        }
        Err(e) => Err(kube_err("create", name, e)),
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use kube::Client;

    use super::*;

    /// Answers each request with the next (status, body) and records
    /// method and URI.
    fn fake(
        answers: Vec<(u16, serde_json::Value)>,
    ) -> (Api<Secret>, tokio::task::JoinHandle<Vec<String>>) {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut answers = answers.into_iter();
            while let Some((req, send)) = handle.next_request().await {
                seen.push(format!("{} {}", req.method(), req.uri()));
                let (status, body) = answers.next().expect("an unexpected request");
                send.send_response(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
            seen
        });
        (
            Api::namespaced(Client::new(mock, "flatlan"), "flatlan"),
            server,
        )
    }

    fn not_found() -> (u16, serde_json::Value) {
        (
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
        )
    }

    fn secret(v: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "flatlan-heartbeat", "namespace": "flatlan"},
            "data": {"secret": ByteString(v.as_bytes().to_vec())}})
    }

    #[tokio::test]
    async fn an_existing_secret_is_read_and_a_missing_one_created_once() {
        let (api, s) = fake(vec![(200, secret("0123456789abcdef0123"))]);
        assert_eq!(
            ensure(&api, "flatlan-heartbeat").await.unwrap(),
            "0123456789abcdef0123"
        );
        drop(api);
        assert_eq!(
            s.await.unwrap(),
            ["GET /api/v1/namespaces/flatlan/secrets/flatlan-heartbeat"]
        );

        let (api, s) = fake(vec![not_found(), (201, secret("x"))]);
        let made = ensure(&api, "flatlan-heartbeat").await.unwrap();
        assert_eq!(made.len(), 64, "32 random bytes, hex");
        drop(api);
        assert_eq!(
            s.await.unwrap(),
            [
                "GET /api/v1/namespaces/flatlan/secrets/flatlan-heartbeat",
                "POST /api/v1/namespaces/flatlan/secrets?",
            ]
        );
    }

    /// Two speakers starting at once: the loser of the create reads the
    /// winner's value, so both authenticate with the same key.
    #[tokio::test]
    async fn a_lost_create_race_takes_the_winners_secret() {
        let conflict = serde_json::json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"});
        let (api, _s) = fake(vec![
            not_found(),
            (409, conflict),
            (200, secret("the-winners-secret-value")),
        ]);
        assert_eq!(
            ensure(&api, "flatlan-heartbeat").await.unwrap(),
            "the-winners-secret-value"
        );
        let (api, _s) = fake(vec![(
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "flatlan-heartbeat"}}),
        )]);
        let e = ensure(&api, "flatlan-heartbeat")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no `secret` key"), "{e}");
    }
}

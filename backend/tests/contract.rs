//! The services' published contract: each serves exactly the operations its OpenAPI spec
//! lists (no more, no fewer), shows it at `/docs`, and schemathesis, generating requests
//! from the spec, finds no server error and no answer that breaks the spec.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Method;
use serde_json::Value;
use testkit::{Stack, StoreKind};

/// The operations both services document, as README's API section describes them; each
/// adds its own way to book.
const SHARED: &[(&str, &str)] = &[
    ("get", "/hotels"),
    ("get", "/hotels/{hotel_id}"),
    ("get", "/hotels/{hotel_id}/availability"),
    ("get", "/reservations/{id}"),
    ("delete", "/reservations/{id}"),
    ("get", "/healthz"),
];
const FRONTEND_BOOKS: (&str, &str) = ("post", "/book");
const BACKEND_BOOKS: (&str, &str) = ("post", "/book_hotel/{hotel_id}");

async fn get_with(http: &reqwest::Client, url: String, header: (&str, &str)) -> reqwest::Response {
    http.get(url)
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
}

async fn stack() -> Stack {
    Stack::builder(StoreKind::Sqlite)
        .spawn()
        .await
        .expect("stack")
}

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

/// The spec lists the documented operations; the router serves each of them (the answer
/// is the route's own, not the fallback's), and no other method on their paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_serves_exactly_its_spec() {
    let s = stack().await;
    let http = reqwest::Client::new();
    for (base, books) in [
        (&s.frontend_url, FRONTEND_BOOKS),
        (&s.backend_url, BACKEND_BOOKS),
    ] {
        let spec: Value = testkit::get_json(&http, format!("{base}/openapi.json")).await;
        assert_eq!(spec["openapi"], "3.1.0", "{base}");
        let listed = operations(&spec);
        let expected: BTreeSet<(String, String)> = SHARED
            .iter()
            .chain([&books])
            .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
            .collect();
        assert_eq!(listed, expected, "{base}: the spec's operations");

        let paths: BTreeSet<&String> = listed.iter().map(|(_, p)| p).collect();
        for path in paths {
            let url = format!(
                "{base}{}",
                path.replace("{hotel_id}", "1")
                    .replace("{id}", "6f1c1d7e-0000-4000-8000-000000000000")
            );
            for method in ["get", "post", "put", "patch", "delete"] {
                let r = http
                    .request(
                        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        &url,
                    )
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let fallback = matches!(
                    body["error"].as_str(),
                    Some("not_found" | "method_not_allowed")
                );
                if listed.contains(&(method.to_string(), path.clone())) {
                    assert!(
                        !fallback,
                        "{method} {url}: listed but not routed ({status} {body})"
                    );
                } else {
                    assert_eq!(
                        status, 405,
                        "{method} {url}: routed but not listed ({body})"
                    );
                }
            }
        }
        // A read names no change, so a key on it is ignored, even one that is not a key.
        let unknown = "/reservations/6f1c1d7e-0000-4000-8000-000000000000";
        for (path, status) in [("/hotels", 200), (unknown, 404)] {
            let r = get_with(
                &http,
                format!("{base}{path}"),
                ("Idempotency-Key", "not a key!"),
            )
            .await;
            assert_eq!(
                r.status(),
                status,
                "{base}{path}: a read with a malformed key"
            );
        }
        let docs = http.get(format!("{base}/docs")).send().await.unwrap();
        assert_eq!(docs.status(), 200);
        let page = docs.text().await.unwrap();
        assert!(
            page.contains("<html") && page.contains("/book"),
            "{base}/docs"
        );
    }
}

/// schemathesis (from the test venv) against both services, bounded in examples, with a
/// fixed seed so that a run is repeatable (`SCHEMATHESIS_EXAMPLES` and `SCHEMATHESIS_SEED`
/// widen it). Every check but `positive_data_acceptance`, which wants every schema-valid
/// request taken: the services refuse some by rules a schema cannot say (a check-out
/// after its check-in, a stay not in the past, a key not reused for another request), each
/// with its documented 400 or 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_either_service() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: scripts/test installs it in .venv",
        bin.display()
    );
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261126".into());
    let s = stack().await;
    for base in [&s.frontend_url, &s.backend_url] {
        let work = testkit::TempDir::new("schemathesis");
        let out = tokio::process::Command::new(&bin)
            .current_dir(work.path())
            .args(["run", &format!("{base}/openapi.json"), "--url", base])
            .args(["--max-examples", &examples, "--seed", &seed])
            .args([
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
            ])
            .args(["--request-timeout", "30", "--no-color"])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{base}: schemathesis found failures:\n{report}"
        );
        assert!(
            report.contains("Tested: 7"),
            "{base}: not every operation was tested:\n{report}"
        );
    }
}

/// With `APP_API_TOKEN`, the backend answers on its routes only whoever sends the token
/// (its sidecar does); its health and its own description stay open, as the spec says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_app_token_the_backend_answers_only_its_sidecar() {
    let s = Stack::builder(StoreKind::Sqlite)
        .backend_env("APP_API_TOKEN", "t0ken")
        .spawn()
        .await
        .expect("stack");
    let http = reqwest::Client::new();
    let backend = &s.backend_url;
    for path in [
        "/hotels",
        "/hotels/1",
        "/reservations/6f1c1d7e-0000-4000-8000-000000000000",
    ] {
        let r = http.get(format!("{backend}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the token");
        let r = get_with(
            &http,
            format!("{backend}{path}"),
            ("dapr-api-token", "t0ken"),
        )
        .await;
        assert_ne!(r.status(), 401, "{path} with the token");
    }
    for (method, path, status) in [
        (Method::GET, "/healthz", 204),
        (Method::HEAD, "/healthz", 204),
        (Method::GET, "/openapi.json", 200),
        (Method::GET, "/docs", 200),
    ] {
        let r = http
            .request(method.clone(), format!("{backend}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path} stays open");
    }
    let r = http
        .get(format!("{}/hotels", s.frontend_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "through the sidecars, which send the token"
    );
}

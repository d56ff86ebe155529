//! The OpenAPI document against the types the API really sends and takes: a field the API has
//! and the document lacks fails here, as does a time that is not in milliseconds.

use river_proto::msg::{
    ApiTokenView, ArchiveRef, NodeInfo, NodeState, NodeUsage, NodeView, Role, Secret, TaskSpec, TokenPurpose,
    TokenView, UserView, VpsSpec,
};

fn schema(name: &str) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("openapi.json parses");
    doc["components"]["schemas"][name].clone()
}

/// The keys of `value` (an object) the schema's properties do not describe.
fn undocumented(value: &serde_json::Value, schema: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .filter(|k| schema["properties"].get(k.as_str()).is_none())
        .cloned()
        .collect()
}

/// A task spec with every field set.
fn full_spec() -> TaskSpec {
    let mut s = TaskSpec::new("img", vec!["true".into()]);
    s.memory_bytes = Some(1);
    s.workdir = Some("w".into());
    s.name = Some("n".into());
    s.environment = Some("e".into());
    s.network = Some("bridge".into());
    s.ip_token = Some(Secret("t".into()));
    s.nodes = Some(2);
    s.vps = Some(VpsSpec {
        ssh_keys: vec![],
        image_sshd: false,
        generation: 0,
    });
    s
}

#[test]
fn the_document_describes_every_field_of_a_task_spec() {
    let spec = serde_json::to_value(full_spec()).unwrap();
    assert_eq!(undocumented(&spec, &schema("TaskSpec")), Vec::<String>::new());
    let vps = &schema("TaskSpec")["properties"]["vps"];
    assert_eq!(undocumented(&spec["vps"], vps), Vec::<String>::new());
}

/// What the host assigns a task, the task view carrying it: every field documented.
#[test]
fn the_document_describes_what_the_host_assigns_a_task() {
    let assigned = river_proto::msg::Assigned {
        archive: Some(ArchiveRef {
            image_id: "sha256:a".into(),
            digest: "d".into(),
            size: 1,
        }),
        ip: Some("10.0.0.1".into()),
        rank: Some(0),
    };
    let value = serde_json::to_value(&assigned).unwrap();
    assert_eq!(undocumented(&value, &schema("Assigned")), Vec::<String>::new());
    assert_eq!(
        schema("Task")["properties"]["assigned"]["$ref"],
        "#/components/schemas/Assigned"
    );
}

fn node() -> NodeView {
    NodeView {
        name: "n".into(),
        state: NodeState::Online,
        address: Some("a".into()),
        info: NodeInfo::default(),
        usage: Some(NodeUsage::default()),
        last_heartbeat_ms: Some(1),
        joined_at_ms: 2,
        cert_expires_at_ms: 3,
    }
}

#[test]
fn the_document_describes_every_field_of_a_node() {
    let n = serde_json::to_value(node()).unwrap();
    assert_eq!(undocumented(&n, &schema("Node")), Vec::<String>::new());
}

/// Every key that names a point in time, at any depth.
fn times(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k.ends_with("_at") || k.contains("_at_") || k.starts_with("last_") {
                    out.push(k.clone());
                }
                times(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| times(v, out)),
        _ => {}
    }
}

#[test]
fn every_time_the_api_sends_is_in_milliseconds_and_says_so() {
    let samples = [
        serde_json::to_value(node()).unwrap(),
        serde_json::to_value(TokenView {
            id: "i".into(),
            purpose: TokenPurpose::Node,
            user: None,
            created_at_ms: 1,
            expires_at_ms: 2,
            uses_left: 1,
            revoked: false,
        })
        .unwrap(),
        serde_json::to_value(UserView {
            name: "u".into(),
            role: Role::User,
            created_at_ms: 1,
            disabled: false,
            removed_at_ms: Some(2),
        })
        .unwrap(),
        serde_json::to_value(ApiTokenView {
            id: "i".into(),
            name: "n".into(),
            user: "u".into(),
            role: Role::User,
            created_at_ms: 1,
            expires_at_ms: 2,
            last_used_ms: Some(3),
            revoked_at_ms: Some(4),
        })
        .unwrap(),
    ];
    let mut keys = Vec::new();
    for s in &samples {
        times(s, &mut keys);
    }
    assert!(!keys.is_empty());
    let wrong: Vec<&String> = keys.iter().filter(|k| !k.ends_with("_ms")).collect();
    assert!(wrong.is_empty(), "times not in milliseconds: {wrong:?}");
}

/// A node's usage history: every field of a sample, and of its GPUs, documented.
#[test]
fn the_document_describes_a_usage_sample() {
    let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
    let items = &doc["paths"]["/api/nodes/{name}/usage"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["items"];
    let sample = river_proto::msg::UsageSample {
        at_ms: 1,
        cpu_percent: 2.0,
        memory_used_bytes: 3,
        gpus: vec![river_proto::msg::GpuUsage {
            index: 0,
            util_percent: 4,
            memory_used_bytes: 5,
            temperature_c: Some(6),
        }],
    };
    let value = serde_json::to_value(&sample).unwrap();
    assert_eq!(undocumented(&value, items), Vec::<String>::new());
    assert_eq!(
        undocumented(&value["gpus"][0], &items["properties"]["gpus"]["items"]),
        Vec::<String>::new()
    );
}

/// The router is built for every connection: its routes (the admin ones merged in, methods on a
/// path shared between them) must fit together, and every documented path must be one of them.
#[tokio::test]
async fn every_documented_route_is_served() {
    use tower::ServiceExt as _;
    let host = crate::service_tests::host().await;
    let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let uri = path
                .replace("{id}", "1")
                .replace("{name}", "n")
                .replace("{seq}", "1")
                .replace("{action}", "kill");
            let req = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(uri.as_str())
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = super::router(host.ctx.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("no such route") && status != axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served: {status} {text}"
            );
        }
    }
}

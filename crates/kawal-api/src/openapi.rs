//! The OpenAPI 3.1 document, generated from the route table so it cannot drift from the
//! router (a test also checks every documented operation answers and nothing else does).
use serde_json::{Map, Value, json};

use crate::routes::{Access, Kind, ROUTES};

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        303 => "See Other (console redirect)",
        400 => "Bad request: malformed or invalid input",
        401 => "Authentication required, or login failed (one answer for every failure)",
        403 => {
            "Not permitted, CSRF or cross-site refusal, password change or re-authentication required"
        }
        404 => "No such resource",
        409 => "Conflict (exists, the last administrator, or an integrity check already running)",
        413 => "Request too large",
        415 => "Unsupported media type",
        422 => {
            "The JSON body does not have the expected fields, or the update was refused (the reason is given)"
        }
        429 => "Too many failed attempts from this address (Retry-After)",
        500 => "Internal error",
        503 => "Busy: too many logins being checked (Retry-After)",
        _ => "See description",
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES.iter().filter(|r| r.kind == Kind::Api) {
        let mut responses = Map::new();
        let ok = r.ok_status();
        responses.insert(ok.to_string(), json!({ "description": status_text(ok) }));
        for code in r.errors {
            responses.insert(
                code.to_string(),
                json!({ "description": status_text(*code) }),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "x-kawal-access": r.needs(),
            "x-kawal-reauth": r.reauth,
            "responses": responses,
        });
        if r.access == Access::Public {
            op["security"] = json!([]);
        }
        if r.reauth {
            op["parameters"] = json!([{ "name": "X-Kawal-Reauth", "in": "header", "required": true, "schema": { "type": "string" }, "description": "Single-use proof from POST /api/v1/reauth" }]);
        }
        if r.path.contains("{name}") {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let mut params = params;
            params.push(json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }));
            op["parameters"] = Value::Array(params);
        }
        let entry = paths
            .entry(openapi_path(r.path))
            .or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "kawal management API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": {
            "session": { "type": "apiKey", "in": "cookie", "name": crate::guard::COOKIE, "description": "From POST /api/v1/login; state changes also need X-CSRF-Token" },
            "clientCert": { "type": "mutualTLS", "description": "A client certificate mapped to an account (automation)" }
        } },
        "security": [{ "session": [] }, { "clientCert": [] }],
        "paths": paths,
    })
}

/// axum's `{name}` is OpenAPI's `{name}` too; kept as a function should the syntaxes part.
fn openapi_path(p: &str) -> String {
    p.to_owned()
}

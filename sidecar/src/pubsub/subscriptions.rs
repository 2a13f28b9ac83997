//! What an app subscribes to: programmatically (its answer to `GET /dapr/subscribe`) or
//! declaratively (`Subscription` resources, `dapr.io/v1alpha1` with `route` or
//! `dapr.io/v2alpha1` with `routes`), in one model: a pub/sub, a topic, the routes to try
//! in order, a dead-letter topic, metadata. A programmatic subscription replaces a
//! declarative one for the same pub/sub and topic, as in daprd.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Where a subscription came from, as the metadata API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Origin {
    Declarative,
    Programmatic,
    /// Opened by the app on a gRPC stream (`SubscribeTopicEventsAlpha1`), for as long as
    /// the stream lasts.
    Streaming,
}

/// One routing rule: a CEL condition on the event (none: always) and the app's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rule {
    #[serde(default, rename = "match", skip_serializing_if = "String::is_empty")]
    pub condition: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub pubsub: String,
    pub topic: String,
    /// Tried in order; the last has no condition when a default route was given.
    pub rules: Vec<Rule>,
    pub dead_letter_topic: String,
    pub metadata: HashMap<String, String>,
    pub origin: Origin,
}

impl Subscription {
    /// Whether the subscription asked for the publisher's bytes as they are.
    pub fn raw_payload(&self) -> bool {
        super::meta(&self.metadata, "rawPayload").and_then(parse_bool) == Some(true)
    }
}

/// Go's `strconv.ParseBool`, which Dapr reads such flags with.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Deserialize, Default)]
struct Routes {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    default: String,
}

/// A subscription as `/dapr/subscribe` answers it or a `Subscription`'s `spec` holds it.
/// Field names as the SDKs write them (Go reads them regardless of case; .NET and Java
/// send `pubsubName`), `null` as absent.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionJson {
    #[serde(alias = "pubsubName", alias = "pubSubName")]
    pubsubname: String,
    topic: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    routes: Option<Routes>,
    #[serde(default, alias = "deadlettertopic")]
    dead_letter_topic: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

impl SubscriptionJson {
    /// The subscription, or none when it names no route at all (daprd drops those with a
    /// warning).
    pub fn into_subscription(self, origin: Origin) -> Option<Subscription> {
        let routes = self.routes.unwrap_or_default();
        let mut rules: Vec<Rule> = routes.rules;
        let default = if routes.default.is_empty() {
            self.route.unwrap_or_default()
        } else {
            routes.default
        };
        if !default.is_empty() {
            rules.push(Rule {
                condition: String::new(),
                path: default,
            });
        }
        if rules.is_empty() {
            tracing::warn!(topic = %self.topic, "topic has no routes; subscription left out");
            return None;
        }
        Some(Subscription {
            pubsub: self.pubsubname,
            topic: self.topic,
            rules,
            dead_letter_topic: self.dead_letter_topic.unwrap_or_default(),
            metadata: self.metadata.unwrap_or_default(),
            origin,
        })
    }
}

/// The app's answer to `GET /dapr/subscribe`.
pub fn parse_programmatic(body: &[u8]) -> Result<Vec<Subscription>, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let items: Vec<SubscriptionJson> = serde_json::from_slice(body)?;
    Ok(items
        .into_iter()
        .filter_map(|s| s.into_subscription(Origin::Programmatic))
        .collect())
}

/// Declarative subscriptions, then programmatic ones: one for the same pub/sub and topic
/// takes the declarative one's place.
pub fn merge(declarative: Vec<Subscription>, programmatic: Vec<Subscription>) -> Vec<Subscription> {
    let mut all: Vec<Subscription> = Vec::new();
    for s in declarative {
        if !all
            .iter()
            .any(|a| a.pubsub == s.pubsub && a.topic == s.topic)
        {
            all.push(s);
        }
    }
    for s in programmatic {
        match all
            .iter_mut()
            .find(|a| a.pubsub == s.pubsub && a.topic == s.topic)
        {
            Some(slot) => *slot = s,
            None => all.push(s),
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_of_dapr_subscribe_are_read() {
        let body = br#"[
            {"pubsubname": "p", "topic": "a", "route": "/a"},
            {"pubsubname": "p", "topic": "b", "routes": {"rules": [{"match": "event.type == \"x\"", "path": "/x"}], "default": "/b"},
             "deadLetterTopic": "dead", "metadata": {"rawPayload": "true"}},
            {"pubsubname": "p", "topic": "none"},
            {"pubsubName": "p", "topic": "dotnet", "route": "/n", "deadLetterTopic": null, "metadata": null}
        ]"#;
        let subs = parse_programmatic(body).unwrap();
        assert_eq!(subs.len(), 3, "a topic without routes is left out");
        assert_eq!(
            (subs[2].pubsub.as_str(), subs[2].rules[0].path.as_str()),
            ("p", "/n")
        );
        assert_eq!(
            subs[0].rules,
            [Rule {
                condition: String::new(),
                path: "/a".into()
            }]
        );
        assert_eq!(subs[1].rules.len(), 2);
        assert_eq!(subs[1].rules[1].path, "/b");
        assert_eq!(subs[1].dead_letter_topic, "dead");
        assert!(subs[1].raw_payload() && !subs[0].raw_payload());
        assert!(parse_programmatic(b"").unwrap().is_empty());
        assert!(parse_programmatic(b"{").is_err());
    }

    #[test]
    fn programmatic_takes_the_place_of_declarative() {
        let sub = |topic: &str, path: &str, origin| Subscription {
            pubsub: "p".into(),
            topic: topic.into(),
            rules: vec![Rule {
                condition: String::new(),
                path: path.into(),
            }],
            dead_letter_topic: String::new(),
            metadata: HashMap::new(),
            origin,
        };
        let all = merge(
            vec![
                sub("a", "/d1", Origin::Declarative),
                sub("a", "/d2", Origin::Declarative),
                sub("b", "/d", Origin::Declarative),
            ],
            vec![
                sub("a", "/p", Origin::Programmatic),
                sub("c", "/p", Origin::Programmatic),
            ],
        );
        let got: Vec<_> = all
            .iter()
            .map(|s| (s.topic.as_str(), s.rules[0].path.as_str()))
            .collect();
        assert_eq!(got, [("a", "/p"), ("b", "/d"), ("c", "/p")]);
    }
}

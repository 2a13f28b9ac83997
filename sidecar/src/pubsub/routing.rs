//! Routing rules of a subscription, as daprd applies them: each rule's `match` is a CEL
//! expression over `event` (the CloudEvent as the app would get it, `event.data` decoded);
//! the rules are tried in order and the first that holds names the path (a rule without
//! `match`, the default route, always holds). No rule holding means the event is not for
//! the app: it is skipped, or sent to the dead-letter topic when there is one; an
//! expression that cannot be evaluated on an event (or gives no boolean) fails that event.

use cel_interpreter::{Context, Program, Value};

use super::subscriptions::Rule;

/// A subscription's rules, compiled once when it starts.
pub struct Routes {
    rules: Vec<(Option<Program>, String)>,
}

impl Routes {
    /// Compiles every `match`; an expression that does not compile is refused, as daprd
    /// refuses to load such a subscription.
    pub fn compile(rules: &[Rule]) -> Result<Routes, String> {
        let rules = rules
            .iter()
            .map(|r| {
                let program = (!r.condition.trim().is_empty())
                    .then(|| parse(&r.condition))
                    .transpose()
                    .map_err(|e| format!("match {:?} is not valid CEL: {e}", r.condition))?;
                Ok((program, r.path.clone()))
            })
            .collect::<Result<_, String>>()?;
        Ok(Routes { rules })
    }

    /// The path of the first rule that holds for `event`; `None` when none does.
    pub fn route(
        &self,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<&str>, String> {
        let mut context: Option<Context> = None;
        for (program, path) in &self.rules {
            let Some(program) = program else {
                return Ok(Some(path));
            };
            let context = match &mut context {
                Some(c) => c,
                None => {
                    let mut c = Context::default();
                    c.add_variable("event", event)
                        .map_err(|e| format!("the event as a CEL value: {e}"))?;
                    context.insert(c)
                }
            };
            let run = std::panic::AssertUnwindSafe(|| program.execute(context));
            match quietly(run) {
                Ok(Ok(Value::Bool(true))) => return Ok(Some(path)),
                Ok(Ok(Value::Bool(false))) => {}
                Ok(Ok(other)) => return Err(format!("a match gave {other:?}, not a boolean")),
                Ok(Err(e)) => return Err(format!("a match could not be evaluated: {e}")),
                Err(_) => return Err("evaluating a match failed".into()),
            }
        }
        Ok(None)
    }
}

/// Compiles one expression. The parser panics on some malformed input instead of saying
/// so (cel-interpreter 0.10), so a panic is taken as the expression's error.
fn parse(expression: &str) -> Result<Program, String> {
    match quietly(|| Program::compile(expression)) {
        Ok(compiled) => compiled.map_err(|e| e.to_string()),
        Err(_) => Err("the CEL parser gave up on it".into()),
    }
}

thread_local! {
    /// Set while CEL code runs on this thread: a panic there is an answer, not a crash.
    static IN_CEL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic, without the panic hook's report for it (the report would
/// read like a crash, once per event); any other panic is reported as before.
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CEL.with(std::cell::Cell::get) {
                report(info);
            }
        }));
    });
    IN_CEL.with(|c| c.set(true));
    let out = std::panic::catch_unwind(f);
    IN_CEL.with(|c| c.set(false));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(condition: &str, path: &str) -> Rule {
        Rule {
            condition: condition.into(),
            path: path.into(),
        }
    }

    fn event(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn the_first_rule_that_holds_names_the_path() {
        let routes = Routes::compile(&[
            rule(
                r#"event.type == "widget" && event.data.price > 100"#,
                "/big",
            ),
            rule(r#"event.type == "widget""#, "/widgets"),
            rule("", "/other"),
        ])
        .unwrap();
        let route = |v| routes.route(&event(v)).unwrap().map(str::to_string);
        assert_eq!(
            route(json!({"type": "widget", "data": {"price": 150}})).as_deref(),
            Some("/big")
        );
        assert_eq!(
            route(json!({"type": "widget", "data": {"price": 5}})).as_deref(),
            Some("/widgets")
        );
        assert_eq!(route(json!({"type": "gadget"})).as_deref(), Some("/other"));
    }

    #[test]
    fn no_rule_holding_is_no_route_and_a_bad_match_an_error() {
        let routes = Routes::compile(&[rule(r#"event.type == "widget""#, "/w")]).unwrap();
        assert_eq!(routes.route(&event(json!({"type": "gadget"}))), Ok(None));
        let not_bool = Routes::compile(&[rule("event.type", "/w")]).unwrap();
        assert!(not_bool.route(&event(json!({"type": "gadget"}))).is_err());
        let missing = Routes::compile(&[rule("event.data.price > 1", "/w")]).unwrap();
        assert!(missing.route(&event(json!({"type": "gadget"}))).is_err());
        assert!(Routes::compile(&[rule("event.type ==", "/w")]).is_err());
    }
}

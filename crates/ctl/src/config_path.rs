//! `Section.Key` paths into the server's config, as `mmctl config get/set` takes them:
//! `ServiceSettings.SiteURL`, `PluginSettings.Plugins.com.mattermost.calls.RTCDServiceURL`.
//! Plugin ids have dots, so each level takes the longest run of the path's parts that
//! names one of its keys; keys match without regard to case (Mattermost keeps plugin
//! settings lowercased).

use serde_json::{Map, Value};

use super::CtlError;

/// The keys `path` names in `v`, as they are spelled there; with `create_last`, the
/// last part may name a key not there yet (in a section that is).
fn keys(v: &Value, path: &str, create_last: bool) -> Result<Vec<String>, CtlError> {
    let parts: Vec<&str> = path.split('.').collect();
    if path.is_empty() || parts.iter().any(|p| p.is_empty()) {
        return Err(CtlError::Usage(format!("not a config key: {path:?}")));
    }
    let mut out = Vec::new();
    let mut cur = v;
    let mut i = 0;
    while i < parts.len() {
        let Some(obj) = cur.as_object() else {
            return Err(CtlError::Usage(format!(
                "{} is not a section: {path} names nothing",
                out.join(".")
            )));
        };
        let found = (i + 1..=parts.len())
            .rev()
            .find_map(|j| find(obj, &parts[i..j].join(".")).map(|k| (j, k)));
        match found {
            Some((j, k)) => {
                cur = &obj[&k];
                out.push(k);
                i = j;
            }
            None if create_last && i + 1 == parts.len() => {
                out.push(parts[i].to_string());
                return Ok(out);
            }
            None => {
                return Err(CtlError::Usage(format!(
                    "no such config key: {path} (nothing named {} under {})",
                    parts[i],
                    if out.is_empty() {
                        "the top".to_string()
                    } else {
                        out.join(".")
                    }
                )))
            }
        }
    }
    Ok(out)
}

fn find(obj: &Map<String, Value>, name: &str) -> Option<String> {
    if obj.contains_key(name) {
        return Some(name.to_string());
    }
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

pub fn get<'a>(v: &'a Value, path: &str) -> Result<&'a Value, CtlError> {
    let mut cur = v;
    for k in keys(v, path, false)? {
        cur = &cur[&k];
    }
    Ok(cur)
}

/// The value `words` stand for, typed as the setting they replace: a string stays a
/// string, a bool must be `true` or `false`, a number a number; a new or structured
/// setting takes JSON (or the words as a string); several words make a list.
pub fn typed(old: Option<&Value>, words: &[String]) -> Result<Value, CtlError> {
    if words.len() > 1 {
        return Ok(Value::Array(
            words.iter().map(|w| Value::String(w.clone())).collect(),
        ));
    }
    let w = words.first().map(String::as_str).unwrap_or_default();
    match old {
        Some(Value::String(_)) => Ok(Value::String(w.to_string())),
        Some(Value::Bool(_)) => match w {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(CtlError::Usage(format!(
                "{w:?} is not a bool (true or false)"
            ))),
        },
        Some(Value::Number(_)) => match serde_json::from_str::<Value>(w) {
            Ok(n @ Value::Number(_)) => Ok(n),
            _ => Err(CtlError::Usage(format!("{w:?} is not a number"))),
        },
        _ => Ok(serde_json::from_str(w).unwrap_or_else(|_| Value::String(w.to_string()))),
    }
}

/// Sets the setting `path` names to what `words` stand for; returns the old value.
pub fn set(v: &mut Value, path: &str, words: &[String]) -> Result<Option<Value>, CtlError> {
    let keys = keys(v, path, true)?;
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| CtlError::Usage(format!("not a config key: {path:?}")))?;
    let mut cur = &mut *v;
    for k in parents {
        cur = &mut cur[k];
    }
    let Some(obj) = cur.as_object_mut() else {
        return Err(CtlError::Usage(format!("{path}: not inside a section")));
    };
    let old = obj.get(last).cloned();
    let new = typed(old.as_ref(), words)?;
    obj.insert(last.clone(), new);
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> Value {
        json!({
            "ServiceSettings": {"SiteURL": "http://a", "EnableDeveloper": false, "MaximumPayloadSizeBytes": 100},
            "PluginSettings": {"Plugins": {"com.mattermost.calls": {"rtcdserviceurl": "", "maxcallparticipants": 0}}},
        })
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plugin_ids_with_dots_and_keys_in_any_case_are_found() {
        let c = cfg();
        assert_eq!(
            get(
                &c,
                "PluginSettings.Plugins.com.mattermost.calls.RTCDServiceURL"
            )
            .unwrap(),
            ""
        );
        assert_eq!(get(&c, "servicesettings.siteurl").unwrap(), "http://a");
        let e = get(&c, "ServiceSettings.Nope").unwrap_err().to_string();
        assert!(
            e.contains("nothing named Nope under ServiceSettings"),
            "{e}"
        );
        assert!(get(&c, "ServiceSettings.SiteURL.More").is_err());
        assert!(get(&c, "ServiceSettings..SiteURL").is_err());
    }

    #[test]
    fn a_value_is_typed_as_the_setting_it_replaces() {
        let mut c = cfg();
        let key = "PluginSettings.Plugins.com.mattermost.calls.RTCDServiceURL";
        set(&mut c, key, &words(&["http://rtcd:8045"])).unwrap();
        assert_eq!(get(&c, key).unwrap(), "http://rtcd:8045");
        // The stored spelling is kept: no second, differently cased key.
        assert_eq!(
            c["PluginSettings"]["Plugins"]["com.mattermost.calls"]
                .as_object()
                .unwrap()
                .len(),
            2
        );
        set(&mut c, "ServiceSettings.EnableDeveloper", &words(&["true"])).unwrap();
        assert_eq!(c["ServiceSettings"]["EnableDeveloper"], true);
        assert!(set(&mut c, "ServiceSettings.EnableDeveloper", &words(&["yes"])).is_err());
        assert!(set(
            &mut c,
            "ServiceSettings.MaximumPayloadSizeBytes",
            &words(&["x"])
        )
        .is_err());
        set(
            &mut c,
            "ServiceSettings.MaximumPayloadSizeBytes",
            &words(&["5"]),
        )
        .unwrap();
        assert_eq!(c["ServiceSettings"]["MaximumPayloadSizeBytes"], 5);
        // A new key takes JSON, or the word as a string; several words make a list.
        set(&mut c, "ServiceSettings.New", &words(&["[1,2]"])).unwrap();
        assert_eq!(c["ServiceSettings"]["New"], json!([1, 2]));
        set(&mut c, "ServiceSettings.Words", &words(&["a", "b"])).unwrap();
        assert_eq!(c["ServiceSettings"]["Words"], json!(["a", "b"]));
        set(&mut c, "ServiceSettings.Text", &words(&["plain text"])).unwrap();
        assert_eq!(c["ServiceSettings"]["Text"], "plain text");
        // A new key goes into a section that exists, never makes one up.
        assert!(set(&mut c, "NoSection.Key", &words(&["1"])).is_err());
        assert!(c.get("NoSection.Key").is_none() && c.get("NoSection").is_none());
    }
}

//! Secret plugin settings in `/api/v4/config`, as Mattermost handles them: a setting
//! whose manifest entry says `"secret": true` is shown as `FAKE_SETTING`, and a PUT that
//! sends `FAKE_SETTING` back keeps the stored value. Secrets never leave the host in
//! clear, and an admin can save the console without retyping them.

use std::path::Path;

use serde_json::Value;

use super::plugins::read_manifest;

/// Mattermost's `model.FakeSetting`.
pub const FAKE_SETTING: &str = "********************************";

/// The secret keys of an installed plugin's settings schema (top-level settings and
/// those of sections).
fn secret_keys(plugins_dir: &Path, plugin_id: &str) -> Vec<String> {
    let Ok(m) = read_manifest(&plugins_dir.join(plugin_id)) else {
        return Vec::new();
    };
    let Some(schema) = m.settings_schema else {
        return Vec::new();
    };
    super::plugins::schema_settings(&schema)
        .into_iter()
        .filter(|s| s.get("secret").and_then(Value::as_bool) == Some(true))
        .filter_map(|s| s.get("key").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn plugins_mut(cfg: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    cfg.pointer_mut("/PluginSettings/Plugins")?.as_object_mut()
}

/// The config as an admin may see it: secret plugin settings masked.
pub fn sanitize(plugins_dir: &Path, mut cfg: Value) -> Value {
    if let Some(plugins) = plugins_mut(&mut cfg) {
        for (id, settings) in plugins.iter_mut() {
            let Some(settings) = settings.as_object_mut() else {
                continue;
            };
            let secret = secret_keys(plugins_dir, id);
            for (k, v) in settings.iter_mut() {
                if secret.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                    *v = Value::String(FAKE_SETTING.into());
                }
            }
        }
    }
    cfg
}

/// A config sent by an admin, with every masked value put back to what `stored` holds
/// (a masked value with nothing stored is dropped).
pub fn desanitize(stored: &Value, mut new: Value) -> Value {
    if let Some(plugins) = plugins_mut(&mut new) {
        for (id, settings) in plugins.iter_mut() {
            let Some(settings) = settings.as_object_mut() else {
                continue;
            };
            let old = stored
                .pointer("/PluginSettings/Plugins")
                .and_then(|p| p.get(id))
                .and_then(Value::as_object);
            let masked: Vec<String> = settings
                .iter()
                .filter(|(_, v)| v.as_str() == Some(FAKE_SETTING))
                .map(|(k, _)| k.clone())
                .collect();
            for k in masked {
                match old.and_then(|o| o.get(&k)) {
                    Some(v) => settings.insert(k, v.clone()),
                    None => settings.remove(&k),
                };
            }
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masked_values_sent_back_keep_the_stored_ones() {
        let stored =
            json!({"PluginSettings": {"Plugins": {"p": {"Secret": "s3cret", "Plain": 1}}}});
        let sent = json!({"PluginSettings": {"Plugins": {"p": {"Secret": FAKE_SETTING, "Other": FAKE_SETTING, "Plain": 2}}}});
        assert_eq!(
            desanitize(&stored, sent),
            json!({"PluginSettings": {"Plugins": {"p": {"Secret": "s3cret", "Plain": 2}}}})
        );
        // A new value replaces the secret.
        let sent = json!({"PluginSettings": {"Plugins": {"p": {"Secret": "new"}}}});
        assert_eq!(desanitize(&stored, sent.clone()), sent);
    }

    #[test]
    fn secret_settings_of_the_manifest_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        let manifest = json!({"id": "p", "settings_schema": {
            "settings": [{"key": "TopSecret", "type": "text", "secret": true}, {"key": "Plain", "type": "text"}],
            "sections": [{"key": "s", "settings": [{"key": "SectionSecret", "type": "text", "secret": true}]}]
        }});
        std::fs::write(dir.path().join("p/plugin.json"), manifest.to_string()).unwrap();
        let cfg = json!({"PluginSettings": {"Plugins": {"p": {"topsecret": "a", "SectionSecret": "b", "Plain": "c"}}}});
        assert_eq!(
            sanitize(dir.path(), cfg),
            json!({"PluginSettings": {"Plugins": {"p": {"topsecret": FAKE_SETTING, "SectionSecret": FAKE_SETTING, "Plain": "c"}}}})
        );
    }
}

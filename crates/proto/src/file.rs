//! Experiment files and printed resources in the protobuf JSON mapping,
//! with the proto field names (`traffic_percent`, `control_variant`): the
//! same shape grpcurl prints, written as YAML or JSON. Both names of a
//! field (`trafficPercent` too) are accepted on input; an unknown field is
//! an error naming it.

use std::{path::Path, sync::OnceLock};

use crate::v1;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptors of experiments.v1 decode")
    })
}

fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the embedded descriptors"))
}

/// The experiment in `path` (`.json`, or YAML otherwise).
pub fn read_experiment(path: &Path) -> Result<v1::Experiment, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    parse_experiment(&text, path.extension().is_some_and(|ext| ext == "json"))
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// An experiment from JSON (`json`) or YAML text.
pub fn parse_experiment(text: &str, json: bool) -> Result<v1::Experiment, String> {
    let descriptor = descriptor("experiments.v1.Experiment");
    let message = if json {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let message = DynamicMessage::deserialize(descriptor, &mut deserializer)
            .map_err(|error| error.to_string())?;
        deserializer.end().map_err(|error| error.to_string())?;
        message
    } else {
        DynamicMessage::deserialize(descriptor, serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|error| error.to_string())?
    };
    message
        .transcode_to::<v1::Experiment>()
        .map_err(|error| error.to_string())
}

/// `message` (of proto type `name`) as YAML with proto field names.
pub fn to_yaml<M: Message>(name: &str, message: &M) -> String {
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("a message re-decodes with its own descriptor");
    let options = SerializeOptions::new().use_proto_field_name(true);
    let mut out = Vec::new();
    let mut serializer = serde_yaml_ng::Serializer::new(&mut out);
    dynamic
        .serialize_with_options(&mut serializer, &options)
        .expect("a dynamic message serializes");
    String::from_utf8(out).expect("YAML is UTF-8")
}

/// `message` (of proto type `name`) as a JSON value with proto field
/// names and every field, defaults included (what the console diffs).
pub fn to_json_value<M: Message>(name: &str, message: &M) -> serde_json::Value {
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("a message re-decodes with its own descriptor");
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a dynamic message serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_proto_or_json_names_parses_and_prints_back_with_proto_names() {
        let yaml = "id: reco_ymal_v1\nname: YMAL\ntrafficPercent: 20\ncontrol_variant: control\n\
                    variants:\n  - name: control\n    weight: 50\n    params: {model_version: v2}\n";
        let experiment = parse_experiment(yaml, false).expect("parses");
        assert_eq!(experiment.traffic_percent, 20);
        assert_eq!(experiment.control_variant, "control");
        let printed = to_yaml("experiments.v1.Experiment", &experiment);
        assert!(printed.contains("traffic_percent: 20"), "{printed}");
        assert!(printed.contains("model_version: v2"), "{printed}");
    }

    #[test]
    fn sequential_and_the_correction_are_read_and_printed_by_their_proto_names() {
        let yaml = "id: reco_ymal_v1\nsequential: true\n\
                    multiple_comparison_correction: MULTIPLE_COMPARISON_CORRECTION_BENJAMINI_HOCHBERG\n";
        let experiment = parse_experiment(yaml, false).expect("parses");
        assert!(experiment.sequential);
        assert_eq!(
            experiment.multiple_comparison_correction,
            v1::MultipleComparisonCorrection::BenjaminiHochberg as i32
        );
        let printed = to_yaml("experiments.v1.Experiment", &experiment);
        assert!(printed.contains("sequential: true"), "{printed}");
        assert!(
            printed.contains(
                "multiple_comparison_correction: MULTIPLE_COMPARISON_CORRECTION_BENJAMINI_HOCHBERG"
            ),
            "{printed}"
        );
        let json = parse_experiment(
            r#"{"id": "x", "multipleComparisonCorrection": "MULTIPLE_COMPARISON_CORRECTION_HOLM"}"#,
            true,
        )
        .expect("JSON names parse too");
        assert_eq!(
            json.multiple_comparison_correction,
            v1::MultipleComparisonCorrection::Holm as i32
        );
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let error = parse_experiment(r#"{"id": "x", "trafic_percent": 5}"#, true)
            .expect_err("unknown field");
        assert!(error.contains("trafic_percent"), "{error}");
    }
}

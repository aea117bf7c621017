//! Chat templates: the Jinja template a model carries in `tokenizer.chat_template`, rendered
//! with minijinja the way Hugging Face's `apply_chat_template` renders it.
//!
//! The template sees `messages` (a list of `{role, content}`), `add_generation_prompt`,
//! `bos_token` and `eos_token`, and a `raise_exception(msg)` function; Python string and
//! list methods (`.strip()`, `.startswith()`, ...) work through minijinja-contrib's pycompat
//! layer. A template comes from a model file, so it runs with a fuel limit: a template that
//! loops forever is an error, not a hang.

use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// A template that cannot be compiled or rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The model has no chat template.
    #[error("the model has no chat template (tokenizer.chat_template)")]
    NoTemplate,
    /// The template does not compile or fails while rendering.
    #[error("chat template: {0}")]
    Template(String),
}

/// Steps of template execution allowed for one rendering.
const FUEL: u64 = 5_000_000;

/// Renders `messages` with `template`. With `add_generation_prompt`, the text ends where the
/// assistant's reply begins.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let err = |e: minijinja::Error| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        ChatError::Template(msg)
    };
    let tmpl = env.template_from_str(template).map_err(err)?;
    tmpl.render(minijinja::context! {
        messages => minijinja::Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_a_default_system_prompt() {
        let out = render(
            SMOLLM2,
            &[Message::new("user", "What is 2+2?")],
            true,
            "",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let own = render(
            SMOLLM2,
            &[
                Message::new("system", "Be brief."),
                Message::new("user", "Hi"),
            ],
            false,
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            own,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn python_methods_and_exceptions() {
        let t = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ bos_token }}{% for m in messages %}[{{ m['content'].strip().upper() }}]{% endfor %}";
        assert_eq!(
            render(t, &[Message::new("user", "  hi  ")], true, "<s>", "</s>").unwrap(),
            "<s>[HI]"
        );
        match render(t, &[Message::new("system", "x")], true, "", "") {
            Err(ChatError::Template(m)) => assert!(m.contains("no system role"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_templates_are_errors() {
        assert!(matches!(
            render("{% for x in", &[], true, "", ""),
            Err(ChatError::Template(_))
        ));
        // Runs out of fuel instead of hanging.
        let forever =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert!(matches!(
            render(forever, &[], true, "", ""),
            Err(ChatError::Template(_))
        ));
    }
}

//! Chat template: messages to the prompt text the model was trained on.
//!
//! The GGUF's `tokenizer.chat_template` (Hugging Face Jinja) is rendered with minijinja the way
//! `transformers` does it: `trim_blocks` and `lstrip_blocks` on, variables `messages`, `bos_token`,
//! `eos_token`, `add_generation_prompt = true`, the functions `raise_exception` and `strftime_now`, and the
//! Python string/dict methods templates call (`strip`, `startswith`, `split`, `items`, ...). Without a
//! template the prompt is ChatML.
//!
//! Strict templates: some models' templates refuse a system turn (Gemma 2) or turns that do not
//! alternate user/assistant (Mistral, Llama 2) with `raise_exception`. The persona always has a system
//! prompt and memory may hold two user turns in a row (a reply that was never produced), so when the
//! template raises, the conversation is folded the way those models were trained to read it and
//! rendered again: the system prompt goes at the top of the first user turn, consecutive turns of one
//! role are joined, and a conversation opening with the assistant (a greeting) gets an empty user turn
//! before it. Only when the folded conversation fails too is it an error, naming the template's own
//! message.

use crate::persona::{ChatMessage, PersonaError, Role};
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn str_arg(args: &[Value], i: usize) -> Option<String> {
    args.get(i).and_then(|v| v.as_str().map(|s| s.to_string()))
}

/// Python methods on strings and maps that chat templates use.
fn py_method(value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let chars = str_arg(args, 0);
        let strip_set = |c: char| match &chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        };
        let v = match method {
            "strip" => Value::from(s.trim_matches(strip_set)),
            "lstrip" => Value::from(s.trim_start_matches(strip_set)),
            "rstrip" => Value::from(s.trim_end_matches(strip_set)),
            "startswith" => Value::from(chars.is_some_and(|p| s.starts_with(&p))),
            "endswith" => Value::from(chars.is_some_and(|p| s.ends_with(&p))),
            "upper" => Value::from(s.to_uppercase()),
            "lower" => Value::from(s.to_lowercase()),
            "title" => Value::from(minijinja_title(s)),
            "replace" => {
                let (a, b) = (
                    str_arg(args, 0).unwrap_or_default(),
                    str_arg(args, 1).unwrap_or_default(),
                );
                Value::from(s.replace(&a, &b))
            }
            "split" => match chars {
                Some(sep) if !sep.is_empty() => {
                    Value::from(s.split(sep.as_str()).map(Value::from).collect::<Vec<_>>())
                }
                _ => Value::from(s.split_whitespace().map(Value::from).collect::<Vec<_>>()),
            },
            "find" => Value::from(
                chars
                    .and_then(|p| s.find(&p).map(|i| s[..i].chars().count() as i64))
                    .unwrap_or(-1),
            ),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        return Ok(v);
    }
    if value.kind() == ValueKind::Map {
        return match method {
            "items" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        Value::from(vec![k, v])
                    })
                    .collect::<Vec<_>>(),
            )),
            "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
            "values" => Ok(Value::from(
                value
                    .try_iter()?
                    .map(|k| value.get_item(&k).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )),
            "get" => {
                let k = args.first().cloned().unwrap_or_default();
                let v = value.get_item(&k).unwrap_or_default();
                Ok(if v.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    v
                })
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        };
    }
    Err(Error::from(ErrorKind::UnknownMethod))
}

fn minijinja_title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `strftime` for the codes chat templates use (UTC).
fn strftime_now(fmt: &str) -> String {
    use crate::text::numbers::MONTHS;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out += &y.to_string(),
            Some('m') => out += &format!("{m:02}"),
            Some('d') => out += &format!("{d:02}"),
            Some('B') => out += MONTHS[(m - 1) as usize],
            Some('b') => out += &MONTHS[(m - 1) as usize][..3],
            Some('H') => out += &format!("{:02}", sod / 3600),
            Some('M') => out += &format!("{:02}", sod / 60 % 60),
            Some('S') => out += &format!("{:02}", sod % 60),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// `source`: the Jinja template, or `None` for ChatML.
    pub fn new(
        source: Option<&str>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, PersonaError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        env.set_unknown_method_callback(|_state, value, method, args| {
            py_method(value, method, args)
        });
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| PersonaError::Other(format!("chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: bos.unwrap_or_default(),
            eos: eos.unwrap_or_default(),
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened; folded for strict templates
    /// (see the module docs) when the template refuses them as they are.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, PersonaError> {
        match self.render_as_is(messages) {
            Ok(p) => Ok(p),
            Err(first) => {
                let folded = fold_for_strict_templates(messages);
                if folded.as_slice() != messages
                    && let Ok(p) = self.render_as_is(&folded)
                {
                    return Ok(p);
                }
                Err(first)
            }
        }
    }

    fn render_as_is(&self, messages: &[ChatMessage]) -> Result<String, PersonaError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_iter([
                    ("role", Value::from(role_name(m.role))),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| PersonaError::Generation(format!("chat template: {e}")))?;
        t.render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos.as_str(),
            eos_token => self.eos.as_str(),
        })
        .map_err(|e| {
            PersonaError::Generation(format!(
                "the model's chat template refused the conversation: {e} (give the model a \
                 `tokenizer.chat_template` that accepts system and user turns, or use a different GGUF)"
            ))
        })
    }
}

/// The conversation as strict templates accept it: no system turn (its text opens the first user turn),
/// user and assistant alternating (consecutive turns of one role joined by a blank line), a user turn
/// first.
fn fold_for_strict_templates(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    if out.first().is_none_or(|m| m.role != Role::User) {
        out.insert(0, ChatMessage::new(Role::User, ""));
    }
    if !system.is_empty() {
        let first = &mut out[0].content;
        let joined = system.join("\n\n");
        *first = if first.is_empty() {
            joined
        } else {
            format!("{joined}\n\n{first}")
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_and_python_methods() {
        let t = ChatTemplate::new(None, None, None).unwrap();
        let p = t.render(&[ChatMessage::new(Role::User, "Hi")]).unwrap();
        assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let src = "{%- for m in messages %}{{ m.content.strip().upper() }}|{{ m['content'].split(',')[1] }}|{{ m.content.startswith(' a') }}{% endfor %}{{ bos_token }}{{ strftime_now('%Y')|length }}";
        let t = ChatTemplate::new(Some(src), Some("<s>".into()), None).unwrap();
        let p = t.render(&[ChatMessage::new(Role::User, " a,b ")]).unwrap();
        assert_eq!(p, "A,B|b |True<s>4");
        let t = ChatTemplate::new(Some("{{ raise_exception('no') }}"), None, None).unwrap();
        assert!(t.render(&[]).is_err());
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
    }

    /// A template in the style of models without a system role that insist on alternation.
    const STRICT: &str = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}<assistant>";

    #[test]
    fn strict_templates_get_the_conversation_folded() {
        let t = ChatTemplate::new(Some(STRICT), None, None).unwrap();
        let msgs = [
            ChatMessage::new(Role::System, "You are Mika."),
            ChatMessage::new(Role::Assistant, "Hi chat!"),
            ChatMessage::new(Role::User, "hello"),
            ChatMessage::new(Role::User, "are you there?"),
        ];
        assert_eq!(
            t.render(&msgs).unwrap(),
            "<user>You are Mika.</user><assistant>Hi chat!</assistant>\
             <user>hello\n\nare you there?</user><assistant>"
        );
        let msgs = [
            ChatMessage::new(Role::System, "You are Mika."),
            ChatMessage::new(Role::User, "hello"),
        ];
        assert_eq!(
            t.render(&msgs).unwrap(),
            "<user>You are Mika.\n\nhello</user><assistant>"
        );
        // a conversation the template accepts is rendered as it is
        let ok = [ChatMessage::new(Role::User, "hello")];
        assert_eq!(t.render(&ok).unwrap(), "<user>hello</user><assistant>");
        // a template that refuses everything names its own message
        let t =
            ChatTemplate::new(Some("{{ raise_exception('no chat here') }}"), None, None).unwrap();
        let e = t.render(&ok).unwrap_err().to_string();
        assert!(
            e.contains("no chat here") && e.contains("chat template"),
            "{e}"
        );
    }
}

//! Twilio's WhatsApp inbound webhook fields, parsed into one value: the
//! sender (a phone number, or a WhatsApp username-era id without one), the
//! text, the profile name, media attachments and quick-reply button
//! payloads. Parsing never trusts the counts it is given: `NumMedia` says
//! how many `MediaUrl{N}` to look for, and at most [`MAX_MEDIA`] are read.

/// WhatsApp allows up to ten attachments in one message.
pub const MAX_MEDIA: usize = 10;

/// Who wrote: WhatsApp identities are phone numbers, or (since usernames)
/// an opaque id when the shopper hides their number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Sender {
    /// E.164, with the `+`.
    Phone(String),
    /// The id after `whatsapp:` when it is not a phone number.
    Username(String),
}

impl Sender {
    /// The conversation key: the phone number or the username id.
    pub fn key(&self) -> &str {
        match self {
            Sender::Phone(phone) | Sender::Username(phone) => phone,
        }
    }

    pub fn phone(&self) -> Option<&str> {
        match self {
            Sender::Phone(phone) => Some(phone),
            Sender::Username(_) => None,
        }
    }
}

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Media {
    pub url: String,
    pub content_type: String,
}

/// An inbound WhatsApp message as Twilio posts it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InboundMessage {
    /// Twilio's id; unique, so a replayed webhook is recognised.
    pub message_sid: String,
    pub from: Sender,
    /// Our WhatsApp number, without `whatsapp:`.
    pub to: String,
    pub body: String,
    pub profile_name: Option<String>,
    pub wa_id: Option<String>,
    pub media: Vec<Media>,
    /// The payload of a quick-reply button the shopper tapped.
    pub button_payload: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("From must be a whatsapp: address")]
    NotWhatsApp,
}

fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// `whatsapp:+60123456789` → phone; `whatsapp:AbC123` → username id.
pub fn parse_sender(raw: &str) -> Result<Sender, InboundError> {
    let address = raw
        .trim()
        .strip_prefix("whatsapp:")
        .ok_or(InboundError::NotWhatsApp)?
        .trim();
    if address.is_empty() {
        return Err(InboundError::Missing("From"));
    }
    let digits = address.strip_prefix('+').unwrap_or(address);
    let is_phone = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    Ok(if is_phone {
        Sender::Phone(format!("+{digits}"))
    } else {
        Sender::Username(address.to_string())
    })
}

impl InboundMessage {
    /// Parses the POST parameters of `POST /webhooks/twilio`.
    pub fn from_params(params: &[(String, String)]) -> Result<Self, InboundError> {
        let message_sid =
            non_empty(field(params, "MessageSid")).ok_or(InboundError::Missing("MessageSid"))?;
        let from = parse_sender(field(params, "From").ok_or(InboundError::Missing("From"))?)?;
        let to = field(params, "To")
            .map(|t| t.trim().trim_start_matches("whatsapp:").to_string())
            .unwrap_or_default();
        let count = field(params, "NumMedia")
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_MEDIA);
        let media = (0..count)
            .filter_map(|n| {
                let url = non_empty(field(params, &format!("MediaUrl{n}")))?;
                let content_type = non_empty(field(params, &format!("MediaContentType{n}")))
                    .unwrap_or_else(|| "application/octet-stream".into());
                Some(Media { url, content_type })
            })
            .collect();
        Ok(InboundMessage {
            message_sid,
            from,
            to,
            body: field(params, "Body").unwrap_or_default().trim().to_string(),
            profile_name: non_empty(field(params, "ProfileName")),
            wa_id: non_empty(field(params, "WaId")),
            media,
            button_payload: non_empty(field(params, "ButtonPayload")),
        })
    }

    /// What the assistant reads: the text, or the tapped button's payload
    /// when there is no text.
    pub fn text(&self) -> &str {
        if self.body.is_empty() {
            self.button_payload.as_deref().unwrap_or_default()
        } else {
            &self.body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_text_message_from_a_phone_number() {
        let message = InboundMessage::from_params(&params(&[
            ("MessageSid", "SM0123"),
            ("From", "whatsapp:+60123456789"),
            ("To", "whatsapp:+60111111111"),
            ("Body", "  where is my order 1234?  "),
            ("ProfileName", "Aisyah"),
            ("WaId", "60123456789"),
            ("NumMedia", "0"),
        ]))
        .unwrap();
        assert_eq!(message.message_sid, "SM0123");
        assert_eq!(message.from, Sender::Phone("+60123456789".into()));
        assert_eq!(message.from.phone(), Some("+60123456789"));
        assert_eq!(message.to, "+60111111111");
        assert_eq!(message.text(), "where is my order 1234?");
        assert_eq!(message.profile_name.as_deref(), Some("Aisyah"));
        assert_eq!(message.wa_id.as_deref(), Some("60123456789"));
        assert!(message.media.is_empty());
    }

    #[test]
    fn a_username_sender_has_no_phone_number() {
        let message = InboundMessage::from_params(&params(&[
            ("MessageSid", "SM1"),
            ("From", "whatsapp:kedai_fan.88"),
            ("Body", "hi"),
        ]))
        .unwrap();
        assert_eq!(message.from, Sender::Username("kedai_fan.88".into()));
        assert_eq!(message.from.phone(), None);
        assert_eq!(message.from.key(), "kedai_fan.88");
    }

    #[test]
    fn media_and_buttons_are_read_within_bounds() {
        let message = InboundMessage::from_params(&params(&[
            ("MessageSid", "SM2"),
            ("From", "whatsapp:+6591234567"),
            ("NumMedia", "3"),
            ("MediaUrl0", "https://api.twilio.com/m/0"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://api.twilio.com/m/1"),
            ("ButtonPayload", "TRACK_ORDER"),
        ]))
        .unwrap();
        assert_eq!(
            message.media,
            vec![
                Media {
                    url: "https://api.twilio.com/m/0".into(),
                    content_type: "image/jpeg".into()
                },
                Media {
                    url: "https://api.twilio.com/m/1".into(),
                    content_type: "application/octet-stream".into()
                },
            ],
            "the third, missing, attachment is not invented"
        );
        assert_eq!(message.text(), "TRACK_ORDER");
        let huge = InboundMessage::from_params(&params(&[
            ("MessageSid", "SM3"),
            ("From", "whatsapp:+6591234567"),
            ("NumMedia", "4000000000"),
        ]))
        .unwrap();
        assert!(huge.media.is_empty());
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert_eq!(
            InboundMessage::from_params(&params(&[("From", "whatsapp:+60123456789")])),
            Err(InboundError::Missing("MessageSid"))
        );
        assert_eq!(
            InboundMessage::from_params(&params(&[("MessageSid", "SM4")])),
            Err(InboundError::Missing("From"))
        );
        assert_eq!(
            InboundMessage::from_params(&params(&[
                ("MessageSid", "SM5"),
                ("From", "+60123456789")
            ])),
            Err(InboundError::NotWhatsApp)
        );
        assert_eq!(
            parse_sender("whatsapp:"),
            Err(InboundError::Missing("From"))
        );
        assert_eq!(
            parse_sender("whatsapp:60123456789"),
            Ok(Sender::Phone("+60123456789".into()))
        );
        assert_eq!(
            parse_sender("whatsapp:+12"),
            Ok(Sender::Username("+12".into()))
        );
    }
}

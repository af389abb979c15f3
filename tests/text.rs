//! Text stage: normalization of chat-style input, clause segmentation, and the streaming tag parser cut
//! at every possible point.

use idol::text::{
    Boundary, ClauseStream, CueEvent, SegmenterConfig, TagEvent, TagParser, TextCue, normalize,
    split_clauses,
};

#[test]
fn normalizes_a_streamer_message() {
    assert_eq!(
        normalize(
            "OMG 2,500 viewers!!! Thx @kira & Dr. Who, see u at 7:30 on 3rd... $5 = 50% off 🎉"
        ),
        "oh my god two thousand five hundred viewers! thanks at kira and Doctor Who, see you at seven \
         thirty on third… five dollars equals fifty percent off party"
    );
    assert_eq!(
        normalize("In 1999 pi was 3.14, vs. today; check www.example.com/page?x=1."),
        "In nineteen ninety nine pi was three point one four, versus today; check example dot com."
    );
}

/// Every way to cut `text` into two pieces, plus one character at a time.
fn cuts(text: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    for (i, _) in text.char_indices().skip(1) {
        out.push(vec![&text[..i], &text[i..]]);
    }
    let mut chars = Vec::new();
    let mut idx: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    idx.push(text.len());
    for w in idx.windows(2) {
        chars.push(&text[w[0]..w[1]]);
    }
    out.push(chars);
    out
}

fn parse_pieces(pieces: &[&str]) -> (String, Vec<TextCue>) {
    let mut p = TagParser::new();
    let mut text = String::new();
    let mut cues = Vec::new();
    let mut events: Vec<TagEvent> = Vec::new();
    for piece in pieces {
        events.extend(p.push(piece));
    }
    events.extend(p.finish());
    for e in events {
        match e {
            TagEvent::Text(t) => text.push_str(&t),
            TagEvent::Cue(c) => cues.push(c),
        }
    }
    (text, cues)
}

#[test]
fn tag_parser_is_independent_of_chunking() {
    let text = "[happy] Hi <wave/> chat! a < b [sad:0.5]so <break time=\"300ms\"/>sad<break 1s/>. \
                <3 [1] </wave><nod>é [excited:0.8]";
    let whole = TagParser::parse_all(text);
    assert_eq!(whole.0, " Hi  chat! a < b so sad. <3 [1] é ");
    assert_eq!(whole.1.len(), 7);
    assert_eq!(
        whole.1[3],
        TextCue {
            at: whole.0.find("sad").unwrap(),
            event: CueEvent::Break { millis: 300 }
        }
    );
    for pieces in cuts(text) {
        assert_eq!(parse_pieces(&pieces), whole, "cut as {pieces:?}");
    }
    // Three pieces: every pair of cut points.
    let idx: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(1).collect();
    for (a, &i) in idx.iter().enumerate() {
        for &j in &idx[a + 1..] {
            let pieces = [&text[..i], &text[i..j], &text[j..]];
            assert_eq!(parse_pieces(&pieces), whole, "cut as {pieces:?}");
        }
    }
}

fn stream(pieces: &[&str]) -> Vec<(String, Boundary, Vec<TextCue>)> {
    let mut s = ClauseStream::new(SegmenterConfig::default());
    let mut out = Vec::new();
    for p in pieces {
        out.extend(s.push(p));
    }
    out.extend(s.finish());
    out.into_iter()
        .map(|c| (c.segment.text, c.segment.boundary, c.cues))
        .collect()
}

#[test]
fn clause_stream_is_independent_of_chunking() {
    let text = "[happy]Hello everyone, welcome back! Dr. Smith has 2,500 viewers <wave> \
                today; amazing... [sad:0.3]But the server is down<break 200ms/>. [calm]";
    let whole = stream(&[text]);
    let texts: Vec<&str> = whole.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Hello everyone,",
            "welcome back!",
            "Dr. Smith has 2,500 viewers  today;",
            "amazing...",
            "But the server is down.",
            ""
        ]
    );
    assert_eq!(whole[0].2[0].at, 0);
    assert!(matches!(&whole[2].2[0].event, CueEvent::Action { name, .. } if name == "wave"));
    assert_eq!(whole[2].2[0].at, "Dr. Smith has 2,500 viewers ".len());
    assert!(matches!(&whole[4].2[0].event, CueEvent::Emotion { name, .. } if name == "sad"));
    assert_eq!(whole[4].2[0].at, 0);
    assert_eq!(whole[4].2[1].event, CueEvent::Break { millis: 200 });
    assert!(matches!(&whole[5].2[0].event, CueEvent::Emotion { name, .. } if name == "calm"));
    assert_eq!(whole[3].1, Boundary::Sentence('…'));
    for pieces in cuts(text) {
        assert_eq!(stream(&pieces), whole, "cut as {pieces:?}");
    }
}

#[test]
fn first_clause_is_released_before_the_sentence_ends() {
    let mut s = ClauseStream::new(SegmenterConfig::default());
    let mut released = Vec::new();
    for piece in ["Okay", " chat", ",", " today", " we", " are"] {
        released.extend(s.push(piece));
    }
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].segment.text, "Okay chat,");
}

#[test]
fn clause_spans_point_into_the_clean_text() {
    let text = "One, two three. Four five, six seven!";
    for c in split_clauses(text) {
        assert_eq!(&text[c.start..c.end], c.text);
    }
}

//! In-memory edits of Piper/VITS and Kokoro ONNX graphs, at the protobuf wire level.
//!
//! Why the wire level: a partial protobuf schema decoded and re-encoded with prost would silently drop
//! every field it does not declare. Here the model is walked as raw protobuf fields (key, wire type,
//! payload); only the `graph` field of the `ModelProto` is rewritten, and inside it only the fields that
//! change are touched: two `RandomNormalLike` nodes are replaced, nodes/initializers/inputs/outputs are
//! appended. Every other byte (weights, value infos, metadata, opsets) is copied unchanged.
//!
//! The edits ([`edit_piper_graph`]):
//! 1. **Durations out.** The per-phoneme durations (in hop-length frames) are the output of the one
//!    `Ceil` node whose output feeds both a `ReduceSum` (the audio length) and a `CumSum` (the alignment
//!    path) — found by that structure, with the name `/Ceil_output_0` only as a fallback. Its output is
//!    added to the graph outputs.
//! 2. **Seeded noise in.** Each `RandomNormalLike(like)` node is replaced by
//!    `Slice(noise_k, zeros, Shape(like))`, where `noise_k` is a new float graph input of shape
//!    `[1, C, T_max]` that the caller fills from a seeded RNG. The slice cuts the fed noise to the shape
//!    the run needs, which for the flow's noise is only known inside the run (it is set by the
//!    durations). `Shape(like)` is also exported (`idol/noise_k/shape`) so the caller can learn each
//!    noise's channel count and whether its length follows the phoneme ids or the frames.
//!
//! Graphs are also cut in two, the ONNX Runtime having no way to run part of a graph: a new model is
//! built from the nodes a set of outputs needs, stopping at the tensors chosen as its inputs
//! (`Graph::extract`): Piper's at its vocoder ([`split_decoder`]), Kokoro's at its decoder's inputs
//! with the sine source's phase ([`split_kokoro_graph`]).
//!
//! Field numbers used (from the ONNX IR definition): ModelProto.graph = 7; GraphProto.node = 1,
//! initializer = 5, input = 11, output = 12; NodeProto.input = 1, output = 2, name = 3, op_type = 4;
//! ValueInfoProto.name = 1, type = 2; TypeProto.tensor_type = 1; TypeProto.Tensor.elem_type = 1,
//! shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1, dim_param = 2; TensorProto.dims = 1,
//! data_type = 2, name = 8, raw_data = 9. Element types: FLOAT = 1, INT64 = 7.

use std::collections::HashMap;

/// A malformed or unexpected model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    #[error("not a valid ONNX protobuf: {0}")]
    Malformed(&'static str),
    #[error("the graph has no {0}; is this a Piper (VITS) voice?")]
    Missing(&'static str),
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

const ELEM_FLOAT: u64 = 1;
const ELEM_INT64: u64 = 7;

/// One protobuf field as it lies in the buffer.
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u32,
    wire: u8,
    /// For length-delimited fields, the payload; for varints, the encoded varint bytes.
    payload: &'a [u8],
    /// The whole field, key included (copied verbatim when unchanged).
    raw: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, OnnxError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or(OnnxError::Malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(OnnxError::Malformed("varint too long"))
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, OnnxError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| OnnxError::Malformed("field number"))?;
        let wire = (key & 7) as u8;
        let payload_start;
        let payload_end;
        match wire {
            WIRE_VARINT => {
                payload_start = pos;
                read_varint(buf, &mut pos)?;
                payload_end = pos;
            }
            WIRE_I64 | WIRE_I32 => {
                payload_start = pos;
                pos += if wire == WIRE_I64 { 8 } else { 4 };
                payload_end = pos;
            }
            WIRE_LEN => {
                let len = read_varint(buf, &mut pos)?;
                let len = usize::try_from(len).map_err(|_| OnnxError::Malformed("length"))?;
                payload_start = pos;
                pos = pos
                    .checked_add(len)
                    .ok_or(OnnxError::Malformed("length overflow"))?;
                payload_end = pos;
            }
            _ => return Err(OnnxError::Malformed("unsupported wire type")),
        }
        if pos > buf.len() {
            return Err(OnnxError::Malformed("field runs past the end"));
        }
        out.push(Field {
            number,
            wire,
            payload: &buf[payload_start..payload_end],
            raw: &buf[start..pos],
        });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(WIRE_LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn put_uint(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

fn utf8(b: &[u8]) -> Result<&str, OnnxError> {
    std::str::from_utf8(b).map_err(|_| OnnxError::Malformed("string is not UTF-8"))
}

/// The parts of a node the editor looks at.
#[derive(Debug, Clone)]
struct Node<'a> {
    name: &'a str,
    op: &'a str,
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    raw: &'a [u8],
}

fn parse_node<'a>(f: &Field<'a>) -> Result<Node<'a>, OnnxError> {
    let mut node = Node {
        name: "",
        op: "",
        inputs: Vec::new(),
        outputs: Vec::new(),
        raw: f.raw,
    };
    for nf in fields(f.payload)? {
        match (nf.number, nf.wire) {
            (1, WIRE_LEN) => node.inputs.push(utf8(nf.payload)?),
            (2, WIRE_LEN) => node.outputs.push(utf8(nf.payload)?),
            (3, WIRE_LEN) => node.name = utf8(nf.payload)?,
            (4, WIRE_LEN) => node.op = utf8(nf.payload)?,
            _ => {}
        }
    }
    Ok(node)
}

fn node_proto(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for i in inputs {
        put_len(&mut b, 1, i.as_bytes());
    }
    for o in outputs {
        put_len(&mut b, 2, o.as_bytes());
    }
    put_len(&mut b, 3, name.as_bytes());
    put_len(&mut b, 4, op.as_bytes());
    b
}

/// A dimension of a value-info shape: fixed or symbolic.
enum Dim<'a> {
    Value(u64),
    Param(&'a str),
}

fn value_info(name: &str, elem_type: u64, dims: Option<&[Dim<'_>]>) -> Vec<u8> {
    let mut tensor = Vec::new();
    put_uint(&mut tensor, 1, elem_type);
    if let Some(dims) = dims {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            match d {
                Dim::Value(v) => put_uint(&mut dim, 1, *v),
                Dim::Param(p) => put_len(&mut dim, 2, p.as_bytes()),
            }
            put_len(&mut shape, 1, &dim);
        }
        put_len(&mut tensor, 2, &shape);
    }
    let mut ty = Vec::new();
    put_len(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    put_len(&mut vi, 1, name.as_bytes());
    put_len(&mut vi, 2, &ty);
    vi
}

fn int64_initializer(name: &str, values: &[i64]) -> Vec<u8> {
    let mut t = Vec::new();
    put_uint(&mut t, 1, values.len() as u64);
    put_uint(&mut t, 2, ELEM_INT64);
    put_len(&mut t, 8, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_len(&mut t, 9, &raw);
    t
}

/// What [`edit_piper_graph`] changed, by tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiperGraphEdits {
    /// The added output holding per-phoneme-id durations in frames (`[1, 1, n_ids]`).
    pub durations: String,
    /// The new noise inputs, in graph order (the stochastic duration predictor's first).
    pub noise_inputs: Vec<String>,
    /// For each noise input, the added output holding the shape the run needed (`[1, C, T]`).
    pub noise_shapes: Vec<String>,
}

/// A model's fields, its graph field, the graph's fields and its nodes (in graph order).
#[allow(clippy::type_complexity)]
fn open_graph(
    model: &[u8],
) -> Result<(Vec<Field<'_>>, Field<'_>, Vec<Field<'_>>, Vec<Node<'_>>), OnnxError> {
    let model_fields = fields(model)?;
    let graph = model_fields
        .iter()
        .find(|f| f.number == 7 && f.wire == WIRE_LEN)
        .copied()
        .ok_or(OnnxError::Missing("graph"))?;
    let graph_fields = fields(graph.payload)?;
    let mut nodes = Vec::new();
    for f in &graph_fields {
        if f.number == 1 && f.wire == WIRE_LEN {
            nodes.push(parse_node(f)?);
        }
    }
    Ok((model_fields, graph, graph_fields, nodes))
}

/// The model's bytes with its graph field (`graph_raw`) replaced by `new_graph`; every other field
/// as it was.
fn replace_graph(model_fields: &[Field<'_>], graph_raw: &[u8], new_graph: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        model_fields.iter().map(|f| f.raw.len()).sum::<usize>() + new_graph.len(),
    );
    for f in model_fields {
        if std::ptr::eq(f.raw, graph_raw) {
            put_len(&mut out, 7, new_graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    out
}

/// The one tensor found by the graph's structure, else the exporter's usual name when a node outputs
/// it, else `missing`.
fn structural_or_named(
    structural: &[&str],
    nodes: &[Node<'_>],
    name: &str,
    missing: &'static str,
) -> Result<String, OnnxError> {
    if let [one] = structural {
        return Ok((*one).to_string());
    }
    if nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .any(|o| *o == name)
    {
        Ok(name.to_string())
    } else {
        Err(OnnxError::Missing(missing))
    }
}

/// The `Ceil` whose output feeds the length computation (`ReduceSum`) and the path (`CumSum`).
fn find_durations(nodes: &[Node<'_>]) -> Result<String, OnnxError> {
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in nodes {
        for i in &n.inputs {
            consumers.entry(i).or_default().push(n.op);
        }
    }
    let structural: Vec<&str> = nodes
        .iter()
        .filter(|n| n.op == "Ceil" && n.outputs.len() == 1)
        .map(|n| n.outputs[0])
        .filter(|o| {
            let c = consumers.get(o).map(Vec::as_slice).unwrap_or_default();
            c.contains(&"ReduceSum") && c.contains(&"CumSum")
        })
        .collect();
    structural_or_named(
        &structural,
        nodes,
        "/Ceil_output_0",
        "Ceil node feeding the length computation (the per-phoneme durations)",
    )
}

/// Rewrite a Piper voice's `ModelProto` bytes: durations out, seeded noise in (see the module docs).
pub fn edit_piper_graph(model: &[u8]) -> Result<(Vec<u8>, PiperGraphEdits), OnnxError> {
    let (model_fields, graph, graph_fields, nodes) = open_graph(model)?;
    let durations = find_durations(&nodes)?;
    let random: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op == "RandomNormalLike")
        .map(|(i, _)| i)
        .collect();
    if random.is_empty() {
        return Err(OnnxError::Missing("RandomNormalLike node (the noise)"));
    }
    let zeros = "idol/zeros3";
    let mut noise_inputs = Vec::new();
    let mut noise_shapes = Vec::new();
    let mut replacement: HashMap<*const u8, Vec<u8>> = HashMap::new();
    for (k, &i) in random.iter().enumerate() {
        let n = &nodes[i];
        let (Some(like), Some(out)) = (n.inputs.first(), n.outputs.first()) else {
            return Err(OnnxError::Malformed(
                "RandomNormalLike without input or output",
            ));
        };
        let input = format!("idol_noise_{k}");
        let shape = format!("idol/noise_{k}/shape");
        let mut bytes = Vec::new();
        let shape_node = node_proto(
            &format!("idol/noise_{k}/Shape"),
            "Shape",
            &[like],
            &[&shape],
        );
        put_len(&mut bytes, 1, &shape_node);
        let slice_node = node_proto(
            &format!("idol/noise_{k}/Slice"),
            "Slice",
            &[&input, zeros, &shape],
            &[out],
        );
        put_len(&mut bytes, 1, &slice_node);
        replacement.insert(n.raw.as_ptr(), bytes);
        noise_inputs.push(input);
        noise_shapes.push(shape);
    }

    // Re-emit the graph: every field as it was, the random nodes replaced in place (so the node list stays
    // topologically sorted), new initializer/inputs/outputs appended after their kind's last field.
    let mut out_graph = Vec::with_capacity(graph.payload.len() + 1024);
    let last_of = |num: u32| graph_fields.iter().rposition(|f| f.number == num);
    let (last_init, last_input, last_output) = (last_of(5), last_of(11), last_of(12));
    let mut appended = (false, false, false);
    let append_init = |g: &mut Vec<u8>| put_len(g, 5, &int64_initializer(zeros, &[0, 0, 0]));
    let append_inputs = |g: &mut Vec<u8>| {
        for name in &noise_inputs {
            let dims = [
                Dim::Value(1),
                Dim::Param("idol_noise_channels"),
                Dim::Param("idol_noise_len"),
            ];
            put_len(g, 11, &value_info(name, ELEM_FLOAT, Some(&dims)));
        }
    };
    let append_outputs = |g: &mut Vec<u8>| {
        put_len(g, 12, &value_info(&durations, ELEM_FLOAT, None));
        for name in &noise_shapes {
            put_len(g, 12, &value_info(name, ELEM_INT64, Some(&[Dim::Value(3)])));
        }
    };
    for (idx, f) in graph_fields.iter().enumerate() {
        match replacement.get(&f.raw.as_ptr()) {
            Some(bytes) if f.number == 1 => out_graph.extend_from_slice(bytes),
            _ => out_graph.extend_from_slice(f.raw),
        }
        if Some(idx) == last_init {
            append_init(&mut out_graph);
            appended.0 = true;
        }
        if Some(idx) == last_input {
            append_inputs(&mut out_graph);
            appended.1 = true;
        }
        if Some(idx) == last_output {
            append_outputs(&mut out_graph);
            appended.2 = true;
        }
    }
    if !appended.0 {
        append_init(&mut out_graph);
    }
    if !appended.1 {
        append_inputs(&mut out_graph);
    }
    if !appended.2 {
        append_outputs(&mut out_graph);
    }

    let out = replace_graph(&model_fields, graph.raw, &out_graph);
    Ok((
        out,
        PiperGraphEdits {
            durations,
            noise_inputs,
            noise_shapes,
        },
    ))
}

/// The per-token durations of a Kokoro (StyleTTS 2) graph: the output of the `Clip` that bounds the
/// rounded duration predictions below by one frame (`Clip(Round(Div(ReduceSum(..), speed)))`), found
/// by that structure, with `/encoder/Clip_output_0` as a fallback.
fn find_kokoro_durations(nodes: &[Node<'_>]) -> Result<String, OnnxError> {
    let producer: HashMap<&str, &Node<'_>> = nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (*o, n)))
        .collect();
    let structural: Vec<&str> = nodes
        .iter()
        .filter(|n| n.op == "Clip" && n.outputs.len() == 1)
        .filter(|n| {
            n.inputs
                .first()
                .and_then(|i| producer.get(i))
                .is_some_and(|r| {
                    r.op == "Round"
                        && r.inputs
                            .first()
                            .and_then(|i| producer.get(i))
                            .is_some_and(|d| d.op == "Div" && d.inputs.contains(&"speed"))
                })
        })
        .map(|n| n.outputs[0])
        .collect();
    structural_or_named(
        &structural,
        nodes,
        "/encoder/Clip_output_0",
        "Clip of the rounded duration predictions (Kokoro's per-token durations)",
    )
}

/// The first field of a message with number 1 (the `name` of a ValueInfoProto), or field 8 (the `name`
/// of a TensorProto).
fn name_field(payload: &[u8], number: u32) -> Result<&str, OnnxError> {
    for f in fields(payload)? {
        if f.number == number && f.wire == WIRE_LEN {
            return utf8(f.payload);
        }
    }
    Ok("")
}

/// A model's graph, indexed.
struct Graph<'a> {
    model_fields: Vec<Field<'a>>,
    graph_raw: &'a [u8],
    fields: Vec<Field<'a>>,
    nodes: Vec<(usize, Node<'a>)>,
    /// name → index into `nodes`.
    producer: HashMap<&'a str, usize>,
    initializers: HashMap<&'a str, usize>,
    inputs: HashMap<&'a str, usize>,
    outputs: HashMap<&'a str, usize>,
}

impl<'a> Graph<'a> {
    fn parse(model: &'a [u8]) -> Result<Self, OnnxError> {
        let model_fields = fields(model)?;
        let graph = model_fields
            .iter()
            .find(|f| f.number == 7 && f.wire == WIRE_LEN)
            .ok_or(OnnxError::Missing("graph"))?;
        let graph_raw = graph.raw;
        let gf = fields(graph.payload)?;
        let mut g = Graph {
            model_fields: Vec::new(),
            graph_raw,
            fields: Vec::new(),
            nodes: Vec::new(),
            producer: HashMap::new(),
            initializers: HashMap::new(),
            inputs: HashMap::new(),
            outputs: HashMap::new(),
        };
        for (i, f) in gf.iter().enumerate() {
            match (f.number, f.wire) {
                (1, WIRE_LEN) => {
                    let node = parse_node(f)?;
                    for o in &node.outputs {
                        g.producer.insert(o, g.nodes.len());
                    }
                    g.nodes.push((i, node));
                }
                (5, WIRE_LEN) => {
                    g.initializers.insert(name_field(f.payload, 8)?, i);
                }
                (11, WIRE_LEN) => {
                    g.inputs.insert(name_field(f.payload, 1)?, i);
                }
                (12, WIRE_LEN) => {
                    g.outputs.insert(name_field(f.payload, 1)?, i);
                }
                _ => {}
            }
        }
        g.fields = gf;
        g.model_fields = model_fields;
        Ok(g)
    }

    /// Nodes needed for `targets`, walking back and stopping at `stop` names, initializers and graph
    /// inputs. Returns (node indices, leaf tensors that nothing produces and that are not initializers).
    fn cone(&self, targets: &[&str], stop: &[&str]) -> (Vec<bool>, Vec<&'a str>) {
        let mut keep = vec![false; self.nodes.len()];
        let mut leaves = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut stack: Vec<&str> = targets.to_vec();
        while let Some(t) = stack.pop() {
            if t.is_empty() || !seen.insert(t) {
                continue;
            }
            if stop.contains(&t) || self.initializers.contains_key(t) {
                continue;
            }
            match self.producer.get(t) {
                Some(&n) => {
                    if !keep[n] {
                        keep[n] = true;
                        stack.extend(self.nodes[n].1.inputs.iter().copied());
                    }
                }
                None => {
                    if let Some(&leaf) = self.inputs.keys().find(|k| **k == t) {
                        leaves.push(leaf);
                    } else {
                        leaves.push(self.node_input_name(t));
                    }
                }
            }
        }
        (keep, leaves)
    }

    /// A tensor name as borrowed from the model (any node input spelling it).
    fn node_input_name(&self, t: &str) -> &'a str {
        self.nodes
            .iter()
            .flat_map(|(_, n)| n.inputs.iter())
            .find(|i| **i == t)
            .copied()
            .unwrap_or("")
    }

    /// A model holding only what `outputs` need, with `inputs` as its graph inputs (existing ones keep
    /// their declarations; others are declared as float tensors of unknown shape). Outputs not declared
    /// before are declared with `elem` types.
    fn extract(&self, inputs: &[&str], outputs: &[(&str, u64)]) -> Result<Vec<u8>, OnnxError> {
        let targets: Vec<&str> = outputs.iter().map(|(n, _)| *n).collect();
        let (keep, leaves) = self.cone(&targets, inputs);
        for leaf in &leaves {
            if !inputs.contains(leaf) && !self.inputs.contains_key(leaf) {
                return Err(OnnxError::Missing(
                    "producer for a tensor the extracted graph needs",
                ));
            }
        }
        let mut used: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (i, (_, n)) in self.nodes.iter().enumerate() {
            if keep[i] {
                used.extend(n.inputs.iter().copied());
            }
        }
        let graph_inputs: Vec<&str> = inputs
            .iter()
            .copied()
            .chain(leaves.iter().copied())
            .filter(|n| !n.is_empty())
            .collect();
        let keep_field: std::collections::HashSet<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| keep[*i])
            .map(|(_, (f, _))| *f)
            .collect();
        let mut g = Vec::new();
        let mut declared_inputs = std::collections::HashSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            match (f.number, f.wire) {
                (1, WIRE_LEN) if !keep_field.contains(&i) => continue,
                (5, WIRE_LEN) if !used.contains(name_field(f.payload, 8)?) => continue,
                (11, WIRE_LEN) => {
                    let name = name_field(f.payload, 1)?;
                    if !graph_inputs.contains(&name) || !declared_inputs.insert(name) {
                        continue;
                    }
                }
                (12, WIRE_LEN) => continue,
                (13, WIRE_LEN) => {
                    let name = name_field(f.payload, 1)?;
                    if graph_inputs.contains(&name) || targets.contains(&name) {
                        continue;
                    }
                }
                _ => {}
            }
            g.extend_from_slice(f.raw);
        }
        for name in &graph_inputs {
            if declared_inputs.insert(name) {
                put_len(&mut g, 11, &value_info(name, ELEM_FLOAT, None));
            }
        }
        for (name, elem) in outputs {
            match self.outputs.get(name) {
                Some(&i) => g.extend_from_slice(self.fields[i].raw),
                None => put_len(&mut g, 12, &value_info(name, *elem, None)),
            }
        }
        Ok(replace_graph(&self.model_fields, self.graph_raw, &g))
    }
}

/// A Piper graph cut at the vocoder, and where it can be, also at the flow: the front (text encoder,
/// durations, and the flow unless it is cut out) outputs the latent frames, or the flow's input; the
/// flow turns any span of its input into latent frames; the decoder (HiFi-GAN) turns any span of latent
/// frames into audio. Both are convolutional along the frames, so they can run on chunks with context.
#[derive(Debug, Clone)]
pub struct DecoderSplit {
    pub front: Vec<u8>,
    pub decoder: Vec<u8>,
    /// The latent tensor `[1, C, frames]` the decoder takes.
    pub latent: String,
    /// Graph inputs the decoder also takes (a multi-speaker voice's `sid`).
    pub cond: Vec<String>,
    /// The flow on its own, when it could be cut out; the front then outputs its inputs.
    pub flow: Option<FlowSplit>,
}

/// The flow cut out of a Piper front: `prior` `[1, C, frames]` (the noised prior, expanded to frames)
/// and `mask` `[1, 1, frames]` in, the latent out.
#[derive(Debug, Clone)]
pub struct FlowSplit {
    pub graph: Vec<u8>,
    pub prior: String,
    pub mask: String,
    /// How many frames either side of an output frame can change it: the sum of the convolutions'
    /// leading pads (every convolution of the flow in series bounds its receptive field). A span
    /// computed with this much context on each side equals the whole-clause flow there.
    pub reach: usize,
}

/// The integers of a node's attribute `name` (AttributeProto: name = 1, ints = 8, packed or not).
fn attr_ints(node: &Node<'_>, name: &str) -> Result<Vec<i64>, OnnxError> {
    let nf = fields(node.raw)?;
    let node_fields = match nf.first() {
        // `raw` is the whole field (key + length + payload): its one field's payload is the node
        Some(f) if nf.len() == 1 => fields(f.payload)?,
        _ => return Err(OnnxError::Malformed("node field")),
    };
    for af in node_fields
        .iter()
        .filter(|f| f.number == 5 && f.wire == WIRE_LEN)
    {
        let attr = fields(af.payload)?;
        if !attr
            .iter()
            .any(|f| f.number == 1 && f.wire == WIRE_LEN && f.payload == name.as_bytes())
        {
            continue;
        }
        let mut out = Vec::new();
        for f in attr.iter().filter(|f| f.number == 8) {
            match f.wire {
                WIRE_VARINT => out.push(read_varint(f.payload, &mut 0)? as i64),
                WIRE_LEN => {
                    let mut pos = 0;
                    while pos < f.payload.len() {
                        out.push(read_varint(f.payload, &mut pos)? as i64);
                    }
                }
                _ => return Err(OnnxError::Malformed("attribute ints")),
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// The flow's inputs: the region of nodes named `/flow/...` (plus unnamed nodes fed only from it) takes
/// exactly two tensors from outside, the prior and the frame mask, and the latent is `flow(prior) *
/// mask`. `None` for any other structure (e.g. a multi-speaker flow conditioned on the speaker).
fn flow_inputs<'a>(g: &Graph<'a>, latent: &str) -> Option<(&'a str, &'a str)> {
    let n = g.nodes.len();
    let mut region: Vec<bool> = g
        .nodes
        .iter()
        .map(|(_, node)| node.name.starts_with("/flow/"))
        .collect();
    if !region.iter().any(|r| *r) {
        return None;
    }
    let produced_in = |region: &[bool], t: &str| g.producer.get(t).is_some_and(|&i| region[i]);
    // grow: nodes whose every computed input comes from the region
    loop {
        let mut grew = false;
        for i in 0..n {
            if region[i] {
                continue;
            }
            let node = &g.nodes[i].1;
            let mut fed = false;
            let mut only = true;
            for t in node.inputs.iter().filter(|t| !t.is_empty()) {
                if g.initializers.contains_key(t) {
                    continue;
                }
                if produced_in(&region, t) {
                    fed = true;
                } else {
                    only = false;
                }
            }
            if fed && only && node.outputs.iter().all(|o| *o != latent) {
                region[i] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let mut outside: Vec<&'a str> = Vec::new();
    for (i, (_, node)) in g.nodes.iter().enumerate() {
        if !region[i] {
            continue;
        }
        for t in &node.inputs {
            if t.is_empty() || g.initializers.contains_key(t) || produced_in(&region, t) {
                continue;
            }
            if !outside.contains(t) {
                outside.push(t);
            }
        }
    }
    if outside.len() != 2 {
        return None;
    }
    // latent = Mul(flow output, mask)
    let mul = &g.nodes[*g.producer.get(latent)?].1;
    if mul.op != "Mul" || mul.inputs.len() != 2 {
        return None;
    }
    let (a, b) = (mul.inputs[0], mul.inputs[1]);
    let mask = if outside.contains(&b) && produced_in(&region, a) {
        b
    } else if outside.contains(&a) && produced_in(&region, b) {
        a
    } else {
        return None;
    };
    let prior = *outside.iter().find(|t| **t != mask)?;
    Some((prior, mask))
}

/// Cut an edited Piper model (see [`edit_piper_graph`]) at its decoder's input: the input of the
/// decoder's first convolution (`/dec/conv_pre`), i.e. the masked, flowed latent.
/// With `cut_flow`, the flow is cut out too where [`flow_inputs`] finds it.
pub fn split_decoder(
    model: &[u8],
    edits: &PiperGraphEdits,
    cut_flow: bool,
) -> Result<DecoderSplit, OnnxError> {
    let g = Graph::parse(model)?;
    let conv_pre = g
        .nodes
        .iter()
        .map(|(_, n)| n)
        .find(|n| n.op == "Conv" && n.name.starts_with("/dec/conv_pre"))
        .ok_or(OnnxError::Missing(
            "decoder input convolution (/dec/conv_pre)",
        ))?;
    let latent = *conv_pre
        .inputs
        .first()
        .ok_or(OnnxError::Malformed("Conv without input"))?;
    let audio = "output";
    if !g.outputs.contains_key(audio) {
        return Err(OnnxError::Missing("output named \"output\""));
    }
    // The decoder's cone, walked back from the audio and stopped at the latent, ends at graph inputs
    // only where the decoder is conditioned (a multi-speaker voice's `sid`); those stay its inputs.
    let (_, leaves) = g.cone(&[audio], &[latent]);
    let cond: Vec<&str> = leaves.iter().copied().filter(|l| *l != latent).collect();
    let mut dec_inputs = vec![latent];
    dec_inputs.extend(cond.iter().copied());
    let decoder = g.extract(&dec_inputs, &[(audio, ELEM_FLOAT)])?;
    // The flow, when it takes nothing but the prior and the mask.
    let found = if cut_flow {
        flow_inputs(&g, latent)
    } else {
        None
    };
    let flow = found.and_then(|(prior, mask)| {
        let (keep, leaves) = g.cone(&[latent], &[prior, mask]);
        if leaves.iter().any(|l| *l != prior && *l != mask) {
            return None;
        }
        let mut reach = 0usize;
        for (i, (_, node)) in g.nodes.iter().enumerate() {
            if keep[i] && node.op == "Conv" {
                let pads = attr_ints(node, "pads").ok()?;
                reach += usize::try_from(pads.first().copied().unwrap_or(0)).ok()?;
            }
        }
        let graph = g.extract(&[prior, mask], &[(latent, ELEM_FLOAT)]).ok()?;
        Some(FlowSplit {
            graph,
            prior: prior.to_string(),
            mask: mask.to_string(),
            reach,
        })
    });
    let mut front_outputs: Vec<(&str, u64)> = match &flow {
        Some(f) => vec![(&f.prior, ELEM_FLOAT), (&f.mask, ELEM_FLOAT)],
        None => vec![(latent, ELEM_FLOAT)],
    };
    front_outputs.push((&edits.durations, ELEM_FLOAT));
    for s in &edits.noise_shapes {
        front_outputs.push((s, ELEM_INT64));
    }
    let front = g.extract(&[], &front_outputs)?;
    Ok(DecoderSplit {
        front,
        decoder,
        latent: latent.to_string(),
        cond: cond.iter().map(|s| s.to_string()).collect(),
        flow,
    })
}

/// A Kokoro graph cut at its decoder's input, so the decoder can run on any window of frames:
/// the front (text encoder, duration and prosody predictors, alignment) outputs the per-token
/// durations, the aligned features `[1, C, frames]`, the pitch (F0) and energy curves `[1, 2·frames]`
/// and the harmonic source's phase `[1, 2·frames, harmonics]`; the decoder takes those (any span of
/// them) and the style, and outputs the audio of that span.
///
/// The phase is the running sum (`CumSum`) inside the decoder's sine source: cut there, the front
/// computes it over the whole clause, so a window of the decoder starts its sines at the phase the
/// whole clause has at that point (cut anywhere before it, every window would restart them at 0).
/// Decoding all frames at once gives the same audio as the uncut graph, bit for bit (the same nodes
/// in the same order). A window is not exactly that span of the whole: the decoder's AdaIN layers
/// normalize over the frames they are given (instance norm) and its int8 inputs are quantized with
/// a scale taken over them, so their statistics are the window's, not the clause's.
#[derive(Debug, Clone)]
pub struct KokoroSplit {
    pub front: Vec<u8>,
    pub decoder: Vec<u8>,
    pub durations: String,
    pub features: String,
    pub f0: String,
    pub energy: String,
    pub phase: String,
}

/// The names the kokoro-onnx export gives the decoder's inputs (the encoder's outputs after their
/// reshapes): aligned features, F0, energy.
const KOKORO_DECODER_INPUTS: [&str; 3] = [
    "/encoder/MatMul_1_output_0",
    "/encoder/Reshape_output_0",
    "/encoder/Reshape_1_output_0",
];

/// The sine source's phase: the `CumSum` a few nodes before a `Sin` (found by that structure, the
/// other `CumSum` builds the alignment), with the exporter's name as a fallback.
fn find_kokoro_phase(g: &Graph<'_>) -> Result<String, OnnxError> {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, n)) in g.nodes.iter().enumerate() {
        for t in &n.inputs {
            consumers.entry(t).or_default().push(i);
        }
    }
    let reaches_sin = |start: &str| {
        let mut frontier = vec![start];
        for _ in 0..6 {
            let mut next = Vec::new();
            for t in frontier {
                for &c in consumers.get(t).map(Vec::as_slice).unwrap_or(&[]) {
                    let node = &g.nodes[c].1;
                    if node.op == "Sin" {
                        return true;
                    }
                    next.extend(node.outputs.iter().copied());
                }
            }
            frontier = next;
        }
        false
    };
    let nodes: Vec<Node<'_>> = g.nodes.iter().map(|(_, n)| n.clone()).collect();
    let structural: Vec<&str> = g
        .nodes
        .iter()
        .map(|(_, n)| n)
        .filter(|n| n.op == "CumSum" && n.outputs.len() == 1 && reaches_sin(n.outputs[0]))
        .map(|n| n.outputs[0])
        .collect();
    structural_or_named(
        &structural,
        &nodes,
        "/decoder/decoder/generator/m_source/l_sin_gen/CumSum_output_0",
        "CumSum of the decoder's sine source (its phase)",
    )
}

/// Cut a Kokoro model (see [`KokoroSplit`]). Fails when the decoder's inputs are not the three
/// tensors the kokoro-onnx export names, the phase and the style.
pub fn split_kokoro_graph(model: &[u8]) -> Result<KokoroSplit, OnnxError> {
    let g = Graph::parse(model)?;
    let nodes: Vec<Node<'_>> = g.nodes.iter().map(|(_, n)| n.clone()).collect();
    let durations = find_kokoro_durations(&nodes)?;
    let phase = find_kokoro_phase(&g)?;
    for t in KOKORO_DECODER_INPUTS {
        if !g.producer.contains_key(t) {
            return Err(OnnxError::Missing(
                "decoder input (aligned features, F0 or energy) of the kokoro-onnx export",
            ));
        }
    }
    let audio = "audio";
    if !g.outputs.contains_key(audio) {
        return Err(OnnxError::Missing("output named \"audio\""));
    }
    let [features, f0, energy] = KOKORO_DECODER_INPUTS;
    let cut = [features, f0, energy, phase.as_str()];
    let (_, leaves) = g.cone(&[audio], &cut);
    if leaves.iter().any(|l| *l != "style") {
        return Err(OnnxError::Missing(
            "decoder that takes nothing but the aligned features, F0, energy, phase and style",
        ));
    }
    let mut dec_inputs = cut.to_vec();
    dec_inputs.push("style");
    let decoder = g.extract(&dec_inputs, &[(audio, ELEM_FLOAT)])?;
    let front = g.extract(
        &[],
        &[
            (durations.as_str(), ELEM_FLOAT),
            (features, ELEM_FLOAT),
            (f0, ELEM_FLOAT),
            (energy, ELEM_FLOAT),
            (phase.as_str(), ELEM_FLOAT),
        ],
    )?;
    Ok(KokoroSplit {
        front,
        decoder,
        durations,
        features: features.to_string(),
        f0: f0.to_string(),
        energy: energy.to_string(),
        phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy graph: x -> Ceil -> {ReduceSum, CumSum}; like -> RandomNormalLike -> Mul.
    fn toy_model() -> Vec<u8> {
        let mut g = Vec::new();
        put_len(&mut g, 1, &node_proto("c", "Ceil", &["x"], &["d"]));
        put_len(&mut g, 1, &node_proto("s", "ReduceSum", &["d"], &["len"]));
        put_len(
            &mut g,
            1,
            &node_proto("cs", "CumSum", &["d", "ax"], &["path"]),
        );
        put_len(
            &mut g,
            1,
            &node_proto("r", "RandomNormalLike", &["like"], &["eps"]),
        );
        put_len(&mut g, 1, &node_proto("m", "Mul", &["eps", "like"], &["y"]));
        put_len(&mut g, 2, b"toy");
        put_len(&mut g, 11, &value_info("x", ELEM_FLOAT, None));
        put_len(&mut g, 12, &value_info("y", ELEM_FLOAT, None));
        // An unknown field that must survive.
        put_len(&mut g, 99, b"keep me");
        let mut m = Vec::new();
        put_uint(&mut m, 1, 8);
        put_len(&mut m, 7, &g);
        put_len(&mut m, 14, b"metadata bytes");
        m
    }

    #[test]
    fn edits_keep_every_other_byte() {
        let model = toy_model();
        let (edited, edits) = edit_piper_graph(&model).unwrap();
        assert_eq!(edits.durations, "d");
        assert_eq!(edits.noise_inputs, vec!["idol_noise_0"]);
        let mf = fields(&edited).unwrap();
        assert_eq!(mf.len(), 3);
        assert_eq!(mf[2].payload, b"metadata bytes");
        let gf = fields(mf[1].payload).unwrap();
        assert!(gf.iter().any(|f| f.number == 99 && f.payload == b"keep me"));
        let nodes: Vec<_> = gf
            .iter()
            .filter(|f| f.number == 1)
            .map(|f| parse_node(f).unwrap())
            .collect();
        let ops: Vec<_> = nodes.iter().map(|n| n.op).collect();
        assert_eq!(
            ops,
            ["Ceil", "ReduceSum", "CumSum", "Shape", "Slice", "Mul"]
        );
        assert_eq!(
            nodes[4].inputs,
            ["idol_noise_0", "idol/zeros3", "idol/noise_0/shape"]
        );
        assert_eq!(nodes[4].outputs, ["eps"]);
        assert_eq!(gf.iter().filter(|f| f.number == 11).count(), 2);
        assert_eq!(gf.iter().filter(|f| f.number == 12).count(), 3);
        assert_eq!(gf.iter().filter(|f| f.number == 5).count(), 1);
    }

    #[test]
    fn rejects_graphs_without_the_pieces() {
        let mut g = Vec::new();
        put_len(&mut g, 1, &node_proto("a", "Relu", &["x"], &["y"]));
        let mut m = Vec::new();
        put_len(&mut m, 7, &g);
        assert!(matches!(edit_piper_graph(&m), Err(OnnxError::Missing(_))));
        assert!(matches!(
            edit_piper_graph(&[0x0a, 0xff]),
            Err(OnnxError::Malformed(_))
        ));
    }
}

//! Making elements and setting their properties without panics.
//!
//! `ElementBuilder::property` panics when an element lacks a property or the
//! value has the wrong type. That is fine for properties that every GStreamer
//! 1.x has with a fixed type (queue, capsfilter, ...), where we use the
//! builder directly; for encoders and other plugins whose properties differ
//! between versions and vendors we go through [`set_num`] / [`set_str`] /
//! [`set_bool`], which check the property's spec first and return an error
//! naming the element and property instead.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

use super::error::PipelineError;

/// `ElementFactory::make(factory)` with a name; a missing factory is a
/// [`PipelineError::MissingElement`] naming the Debian package.
pub fn builder<'a>(
    factory: &'a str,
    name: &'a str,
) -> Result<gst::element_factory::ElementBuilder<'a>, PipelineError> {
    if gst::ElementFactory::find(factory).is_none() {
        return Err(PipelineError::missing(factory));
    }
    Ok(gst::ElementFactory::make(factory).name(name))
}

/// Finish a builder from [`builder`], mapping failure to an error naming `factory`.
pub fn build(
    b: gst::element_factory::ElementBuilder<'_>,
    factory: &str,
) -> Result<gst::Element, PipelineError> {
    b.build().map_err(|e| PipelineError::Create {
        element: factory.to_owned(),
        message: e.to_string(),
    })
}

/// An element with no properties set.
pub fn make(factory: &str, name: &str) -> Result<gst::Element, PipelineError> {
    build(builder(factory, name)?, factory)
}

/// The spec of a property we may set now (it exists, is writable and not construct-only).
fn pspec(el: &gst::Element, property: &str) -> Result<glib::ParamSpec, PipelineError> {
    let spec = el
        .find_property(property)
        .ok_or_else(|| prop_err(el, property, "no such property"))?;
    let flags = spec.flags();
    if !flags.contains(glib::ParamFlags::WRITABLE)
        || flags.contains(glib::ParamFlags::CONSTRUCT_ONLY)
    {
        return Err(prop_err(el, property, "is not writable"));
    }
    Ok(spec)
}

/// Would GLib take `value` as is? (glib-rs panics when validation changes it.)
fn is_valid(spec: &glib::ParamSpec, value: &glib::Value) -> bool {
    use glib::translate::{ToGlibPtr, ToGlibPtrMut};
    let mut copy = value.clone();
    // SAFETY: both pointers are valid for the call; validation works on our own copy.
    let changed = unsafe {
        glib::gobject_ffi::g_param_value_validate(spec.to_glib_none().0, copy.to_glib_none_mut().0)
    };
    changed == glib::ffi::GFALSE
}

fn prop_err(el: &gst::Element, property: &str, message: impl Into<String>) -> PipelineError {
    PipelineError::Property {
        element: el.name().to_string(),
        property: property.to_owned(),
        message: message.into(),
    }
}

/// Set an integer property whatever its integer type (u32, i32, u64, i64,
/// ulong, long, or double), checking the range.
pub fn set_num(el: &gst::Element, property: &str, v: u64) -> Result<(), PipelineError> {
    let spec = pspec(el, property)?;
    let t = spec.value_type();
    let out_of_range = || prop_err(el, property, format!("{v} is out of range"));
    let value = if t == glib::Type::U32 {
        u32::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else if t == glib::Type::I32 {
        i32::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else if t == glib::Type::U64 {
        v.to_value()
    } else if t == glib::Type::I64 {
        i64::try_from(v).map_err(|_| out_of_range())?.to_value()
    } else if t == glib::Type::U_LONG {
        glib::ULong(libc::c_ulong::try_from(v).map_err(|_| out_of_range())?).to_value()
    } else if t == glib::Type::I_LONG {
        glib::ILong(libc::c_long::try_from(v).map_err(|_| out_of_range())?).to_value()
    } else if t == glib::Type::F64 {
        (v as f64).to_value()
    } else {
        return Err(prop_err(el, property, format!("is a {t}, not a number")));
    };
    if !is_valid(&spec, &value) {
        return Err(out_of_range());
    }
    el.set_property_from_value(property, &value);
    Ok(())
}

pub fn set_bool(el: &gst::Element, property: &str, v: bool) -> Result<(), PipelineError> {
    let spec = pspec(el, property)?;
    if spec.value_type() != glib::Type::BOOL {
        return Err(prop_err(
            el,
            property,
            format!("is a {}, not a boolean", spec.value_type()),
        ));
    }
    el.set_property(property, v);
    Ok(())
}

/// Set a property from its string form (enums and flags by nick, e.g. `"cbr"`).
pub fn set_str(el: &gst::Element, property: &str, v: &str) -> Result<(), PipelineError> {
    let spec = pspec(el, property)?;
    let value = <glib::Value as gst::prelude::GstValueExt>::deserialize_with_pspec(v, &spec)
        .map_err(|_| prop_err(el, property, format!("does not take {v:?}")))?;
    if !is_valid(&spec, &value) {
        return Err(prop_err(el, property, format!("does not take {v:?}")));
    }
    el.set_property_from_value(property, &value);
    Ok(())
}

/// Link `elements` in order, naming the pair that would not link.
pub fn link_chain(elements: &[&gst::Element]) -> Result<(), PipelineError> {
    for pair in elements.windows(2) {
        pair[0].link(pair[1]).map_err(|e| PipelineError::Link {
            from: pair[0].name().to_string(),
            to: pair[1].name().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Apply optional settings: a failure is logged, not fatal (used for tuning
/// knobs whose absence still leaves a working, if less tuned, element).
pub fn soft(result: Result<(), PipelineError>) {
    if let Err(e) = result {
        tracing::warn!("{e} (continuing without it)");
    }
}

/// A caps field value (caps take `i32`).
pub fn caps_int(v: u32, what: &str) -> Result<i32, PipelineError> {
    match i32::try_from(v) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(PipelineError::Config(format!(
            "{what} must be between 1 and {}, not {v}",
            i32::MAX
        ))),
    }
}

/// h264parse with SPS/PPS before every IDR (a viewer can start at any keyframe).
pub(crate) fn h264parse() -> Result<gst::Element, PipelineError> {
    h264parse_named("h264parse")
}

/// [`h264parse`] with a name of its own (one per layer).
pub(crate) fn h264parse_named(name: &str) -> Result<gst::Element, PipelineError> {
    build(
        builder("h264parse", name)?.property("config-interval", -1i32),
        "h264parse",
    )
}

/// A capsfilter for H.264 byte-stream in whole access units.
pub(crate) fn h264_au_filter(name: &str) -> Result<gst::Element, PipelineError> {
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build();
    build(
        builder("capsfilter", name)?.property("caps", caps),
        "capsfilter",
    )
}

pub(crate) fn add_and_link(
    pipeline: &gst::Pipeline,
    chain: &[gst::Element],
) -> Result<(), PipelineError> {
    for el in chain {
        pipeline.add(el).map_err(|e| PipelineError::Create {
            element: el.name().to_string(),
            message: e.to_string(),
        })?;
    }
    let refs: Vec<&gst::Element> = chain.iter().collect();
    link_chain(&refs)
}

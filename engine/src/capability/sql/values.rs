//! Conversions between the WIT `value` variant and PostgreSQL's wire formats.
//!
//! Parameters are sent untyped, so the server infers each one's type from the
//! statement (`substr(t, $1)` makes `$1` an int4); [`Param`] then encodes the
//! plugin's value for that type, or explains the mismatch. Results are decoded
//! from the binary format by column type into [`Cell`].

use std::error::Error;

use bytes::{BufMut, BytesMut};
use postgres_types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::types::Value;

type BoxError = Box<dyn Error + Sync + Send>;

/// Microseconds from 1970-01-01 (Unix) to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The name a plugin author knows a value by, for error messages.
pub fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Numeric(_) => "numeric",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Json(_) => "json",
        Value::Uuid(_) => "uuid",
        Value::Timestamptz(_) => "timestamptz",
        Value::Timestamp(_) => "timestamp",
        Value::Date(_) => "date",
        Value::TextArray(_) => "text-array",
        Value::IntArray(_) => "int-array",
    }
}

fn is_text_like(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || ty.name() == "citext"
}

/// A statement parameter supplied by a plugin.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl Param<'_> {
    fn mismatch(&self, ty: &Type) -> BoxError {
        format!(
            "the statement expects {} here but the plugin passed a {} value; pass a matching value or cast the parameter in SQL (e.g. `$1::{}`)",
            ty.name(),
            value_kind(self.0),
            match &self.0 {
                Value::Int(_) => "int8",
                Value::Float(_) => "float8",
                Value::Text(_) => "text",
                Value::Json(_) => "jsonb",
                _ => "type",
            }
        )
        .into()
    }
}

fn int_in_range<T: TryFrom<i64>>(value: i64, ty: &Type) -> Result<T, BoxError> {
    T::try_from(value).map_err(|_| format!("{value} does not fit in {}", ty.name()).into())
}

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if matches!(self.encode_format(ty), Format::Text) {
            // Text-format parameters: the server parses them for the inferred type.
            let text = match &self.0 {
                Value::Int(v) => v.to_string(),
                Value::Float(v) => float_text(*v),
                Value::Numeric(v) | Value::Text(v) => v.clone(),
                _ => return Err(self.mismatch(ty)),
            };
            out.put_slice(text.as_bytes());
            return Ok(IsNull::No);
        }
        let is_null = match (&self.0, ty) {
            (Value::Null, _) => IsNull::Yes,
            (Value::Boolean(v), &Type::BOOL) => v.to_sql(ty, out)?,
            (Value::Int(v), &Type::INT2) => int_in_range::<i16>(*v, ty)?.to_sql(ty, out)?,
            (Value::Int(v), &Type::INT4) => int_in_range::<i32>(*v, ty)?.to_sql(ty, out)?,
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out)?,
            (Value::Int(v), &Type::OID) => int_in_range::<u32>(*v, ty)?.to_sql(ty, out)?,
            (Value::Int(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out)?,
            (Value::Int(v), &Type::FLOAT4) => (*v as f32).to_sql(ty, out)?,
            (Value::Float(v), &Type::FLOAT8) => v.to_sql(ty, out)?,
            (Value::Float(v), &Type::FLOAT4) => (*v as f32).to_sql(ty, out)?,
            (Value::Bytes(v), &Type::BYTEA) => v.to_sql(ty, out)?,
            (Value::Json(v), &Type::JSON) => {
                out.put_slice(v.as_bytes());
                IsNull::No
            }
            (Value::Json(v), &Type::JSONB) => {
                out.put_u8(1); // jsonb binary format version
                out.put_slice(v.as_bytes());
                IsNull::No
            }
            (Value::Uuid(v), &Type::UUID) => {
                let uuid =
                    uuid::Uuid::parse_str(v).map_err(|e| format!("invalid uuid {v:?}: {e}"))?;
                out.put_slice(uuid.as_bytes());
                IsNull::No
            }
            (
                Value::Timestamptz(us) | Value::Timestamp(us),
                &Type::TIMESTAMPTZ | &Type::TIMESTAMP,
            ) => {
                out.put_i64(
                    us.checked_sub(PG_EPOCH_US)
                        .ok_or("timestamp out of range")?,
                );
                IsNull::No
            }
            (Value::Date(days), &Type::DATE) => {
                out.put_i32(days.checked_sub(PG_EPOCH_DAYS).ok_or("date out of range")?);
                IsNull::No
            }
            (Value::TextArray(items), t) if is_text_array(t) => items.to_sql(ty, out)?,
            (Value::IntArray(items), &Type::INT8_ARRAY) => items.to_sql(ty, out)?,
            (Value::IntArray(items), &Type::INT4_ARRAY) => items
                .iter()
                .map(|v| v.map(|v| int_in_range::<i32>(v, &Type::INT4)).transpose())
                .collect::<Result<Vec<Option<i32>>, _>>()?
                .to_sql(ty, out)?,
            (Value::IntArray(items), &Type::INT2_ARRAY) => items
                .iter()
                .map(|v| v.map(|v| int_in_range::<i16>(v, &Type::INT2)).transpose())
                .collect::<Result<Vec<Option<i16>>, _>>()?
                .to_sql(ty, out)?,
            _ => return Err(self.mismatch(ty)),
        };
        Ok(is_null)
    }

    fn accepts(_: &Type) -> bool {
        // Every combination is checked in `to_sql`, which can say what went wrong.
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        match (&self.0, ty) {
            // Exact decimals travel as text: no precision is lost on the way.
            (Value::Numeric(_), _) => Format::Text,
            (Value::Int(_) | Value::Float(_), &Type::NUMERIC) => Format::Text,
            // Text goes to any scalar type as a literal the server parses
            // (`'2024-05-01'` for a date, `'12.5'` for numeric, …).
            (Value::Text(_), t) if !is_text_array(t) && !matches!(*t, Type::BYTEA) => Format::Text,
            _ => Format::Binary,
        }
    }

    to_sql_checked!();
}

fn is_text_array(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY | Type::NAME_ARRAY
    )
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        v.to_string()
    }
}

/// A result cell as it came off the wire, not yet decoded: decoding can make
/// far more of a value than the wire carried (a `numeric` of a few bytes can
/// be 130,000 digits of text), so the host first asks [`RawCell::decoded_size`]
/// and decodes only within the result's byte cap.
#[derive(Debug)]
pub struct RawCell<'a> {
    ty: Type,
    raw: Option<&'a [u8]>,
}

impl<'a> FromSql<'a> for RawCell<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Self {
            ty: ty.clone(),
            raw: Some(raw),
        })
    }

    fn from_sql_null(ty: &Type) -> Result<Self, BoxError> {
        Ok(Self {
            ty: ty.clone(),
            raw: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What every value costs beyond its bytes, for the result's byte count.
const VALUE_OVERHEAD: usize = 8;

impl RawCell<'_> {
    /// An upper bound of what the decoded value costs the host, in bytes,
    /// worked out from the wire format's headers without decoding anything.
    pub fn decoded_size(&self) -> usize {
        let Some(raw) = self.raw else {
            return VALUE_OVERHEAD;
        };
        let word = |i: usize| {
            raw.get(i * 2..i * 2 + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
        };
        match self.ty {
            Type::NUMERIC => {
                // Sign, integer digits (4 per base-10000 digit of weight), point,
                // `dscale` fraction digits.
                let weight = usize::try_from(word(1) as i16).unwrap_or(0);
                let dscale = usize::from(word(3));
                2 + 4 * (weight + 1) + dscale + VALUE_OVERHEAD
            }
            Type::INT2_ARRAY | Type::INT4_ARRAY | Type::INT8_ARRAY => {
                array_elements(raw).saturating_mul(VALUE_OVERHEAD + 8)
            }
            ref t if is_text_array(t) => array_elements(raw)
                .saturating_mul(VALUE_OVERHEAD)
                .saturating_add(raw.len()),
            _ => raw.len() + VALUE_OVERHEAD,
        }
    }

    /// Decodes the value (call [`Self::decoded_size`] first).
    pub fn decode(&self) -> Result<Value, BoxError> {
        match self.raw {
            None => Ok(Value::Null),
            Some(raw) => Cell::from_sql(&self.ty, raw).map(|Cell(v)| v),
        }
    }
}

/// Elements of a binary array (the product of its dimensions), from its header:
/// ndim, has-null flag, element type, then (length, lower bound) per dimension.
fn array_elements(raw: &[u8]) -> usize {
    let int = |at: usize| {
        raw.get(at..at + 4)
            .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let dims = usize::try_from(int(0)).unwrap_or(0);
    if dims == 0 {
        return 0;
    }
    (0..dims).fold(1usize, |n, d| {
        n.saturating_mul(usize::try_from(int(12 + d * 8)).unwrap_or(0))
    })
}

/// A result cell decoded for a plugin.
#[derive(Debug)]
pub struct Cell(pub Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let value = match *ty {
            Type::BOOL => Value::Boolean(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Numeric(decode_numeric(raw)?),
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::JSON => Value::Json(std::str::from_utf8(raw)?.to_string()),
            Type::JSONB => match raw.split_first() {
                Some((1, json)) => Value::Json(std::str::from_utf8(json)?.to_string()),
                _ => return Err("unsupported jsonb format version".into()),
            },
            Type::UUID => Value::Uuid(uuid::Uuid::from_slice(raw)?.hyphenated().to_string()),
            Type::TIMESTAMPTZ => Value::Timestamptz(from_pg_micros(i64::from_sql(ty, raw)?)),
            Type::TIMESTAMP => Value::Timestamp(from_pg_micros(i64::from_sql(ty, raw)?)),
            Type::DATE => Value::Date(from_pg_days(i32::from_sql(ty, raw)?)),
            Type::INT2_ARRAY => Value::IntArray(
                Vec::<Option<i16>>::from_sql(ty, raw)?
                    .into_iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            ),
            Type::INT4_ARRAY => Value::IntArray(
                Vec::<Option<i32>>::from_sql(ty, raw)?
                    .into_iter()
                    .map(|v| v.map(i64::from))
                    .collect(),
            ),
            Type::INT8_ARRAY => Value::IntArray(Vec::<Option<i64>>::from_sql(ty, raw)?),
            ref t if is_text_array(t) => {
                Value::TextArray(Vec::<Option<String>>::from_sql(ty, raw)?)
            }
            ref t if is_text_like(t) => Value::Text(std::str::from_utf8(raw)?.to_string()),
            _ => {
                return Err(format!("plugins cannot read values of type {} yet", ty.name()).into());
            }
        };
        Ok(Cell(value))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Whether plugins can read a column of this type (checked before running a query,
/// so the error names the column instead of failing halfway through the rows).
pub fn readable(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::BYTEA
            | Type::JSON
            | Type::JSONB
            | Type::UUID
            | Type::TIMESTAMPTZ
            | Type::TIMESTAMP
            | Type::DATE
            | Type::INT2_ARRAY
            | Type::INT4_ARRAY
            | Type::INT8_ARRAY
    ) || is_text_array(ty)
        || is_text_like(ty)
}

// ±infinity are sent as i64::MAX/MIN (i32 for dates); keep them as they are.
fn from_pg_micros(v: i64) -> i64 {
    if v == i64::MAX || v == i64::MIN {
        v
    } else {
        v.saturating_add(PG_EPOCH_US)
    }
}

fn from_pg_days(v: i32) -> i32 {
    if v == i32::MAX || v == i32::MIN {
        v
    } else {
        v.saturating_add(PG_EPOCH_DAYS)
    }
}

/// Decodes PostgreSQL's binary `numeric` into exact decimal text.
///
/// Layout: ndigits, weight, sign, dscale (each 16 bits), then `ndigits` base-10000
/// digits; digit `i` is worth `10000^(weight - i)`.
pub fn decode_numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("invalid numeric sign {other:#x}").into()),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(word(4 + i)?);
    }
    let digit_at = |position: i32| -> u16 {
        let index = weight - position;
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 && digits.iter().any(|&d| d != 0) {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit_at(weight).to_string());
        for position in (0..weight).rev() {
            text.push_str(&format!("{:04}", digit_at(position)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let groups = dscale.div_ceil(4) as i32;
        for position in 1..=groups {
            fraction.push_str(&format!("{:04}", digit_at(-position)));
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        raw
    }

    #[test]
    fn decoded_sizes_bound_what_decoding_makes() {
        // 1e131071: two words on the wire, 131,072 digits decoded.
        let huge = numeric(1, 32767, 0, 0, &[1]);
        let cell = RawCell {
            ty: Type::NUMERIC,
            raw: Some(&huge),
        };
        let decoded = decode_numeric(&huge).expect("valid numeric");
        assert!(decoded.len() > 131_000);
        assert!(cell.decoded_size() >= decoded.len(), "the bound holds");
        for (raw, want) in [
            (numeric(2, 0, 0, 2, &[12, 5000]), "12.50"),
            (numeric(1, -2, 0, 8, &[12]), "0.00000012"),
            (numeric(2, 1, 0x4000, 0, &[1, 2345]), "-12345"),
        ] {
            let cell = RawCell {
                ty: Type::NUMERIC,
                raw: Some(&raw),
            };
            assert!(cell.decoded_size() >= want.len() + VALUE_OVERHEAD, "{want}");
        }
        // An int2[] of 3 elements (one dimension): 3 × 16 bytes once decoded.
        let mut array = Vec::new();
        for v in [1i32, 0, 21, 3, 1] {
            array.extend_from_slice(&v.to_be_bytes());
        }
        let cell = RawCell {
            ty: Type::INT2_ARRAY,
            raw: Some(&array),
        };
        assert_eq!(cell.decoded_size(), 3 * 16);
    }

    #[test]
    fn numerics_decode_exactly() {
        let cases: &[(Vec<u8>, &str)] = &[
            (numeric(0, 0, 0, 0, &[]), "0"),
            (numeric(0, 0, 0, 2, &[]), "0.00"),
            (numeric(1, 0, 0, 0, &[12]), "12"),
            (numeric(2, 0, 0, 2, &[12, 5000]), "12.50"),
            (numeric(2, 1, 0x4000, 0, &[1, 2345]), "-12345"),
            (numeric(1, -1, 0, 4, &[5]), "0.0005"),
            (numeric(1, -2, 0, 6, &[1200]), "0.000012"),
            (numeric(1, -2, 0, 8, &[12]), "0.00000012"),
            (numeric(3, 2, 0, 0, &[1, 0, 0]), "100000000"),
            (numeric(1, 2, 0, 0, &[1]), "100000000"),
            (numeric(0, 0, 0xC000, 0, &[]), "NaN"),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_numeric(raw).ok().as_deref(), Some(*want));
        }
        assert!(
            decode_numeric(&[0, 1]).is_err(),
            "truncated input is an error"
        );
    }

    fn text_format(value: Value, ty: &Type) -> bool {
        matches!(Param(&value).encode_format(ty), Format::Text)
    }

    #[test]
    fn params_pick_text_format_for_exact_and_literal_values() {
        assert!(text_format(Value::Numeric("1.5".into()), &Type::NUMERIC));
        assert!(text_format(Value::Int(1), &Type::NUMERIC));
        assert!(text_format(Value::Text("2024-01-01".into()), &Type::DATE));
        assert!(!text_format(Value::Int(1), &Type::INT4));
    }

    #[test]
    fn params_check_ranges_and_types() {
        let mut out = BytesMut::new();
        assert!(
            Param(&Value::Int(70_000))
                .to_sql(&Type::INT2, &mut out)
                .is_err()
        );
        assert!(Param(&Value::Int(7)).to_sql(&Type::INT2, &mut out).is_ok());
        let err = Param(&Value::Boolean(true))
            .to_sql(&Type::INT4, &mut out)
            .err()
            .expect("bool into int4 is a mismatch");
        assert!(err.to_string().contains("expects int4"), "{err}");
        assert!(matches!(
            Param(&Value::Null).to_sql(&Type::INT4, &mut out),
            Ok(IsNull::Yes)
        ));
    }
}

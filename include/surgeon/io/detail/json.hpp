/// @file io/detail/json.hpp
/// @brief Bounded parsing of untrusted JSON (safetensors headers) with nlohmann-json, and the
/// UTF-8 check the writers need.
///
/// nlohmann's parser is strict RFC 8259 (no comments, trailing commas or leading zeros; strings
/// must be valid UTF-8 with paired `\u` surrogates; no unescaped control characters) and does
/// not recurse, but it accepts any nesting depth and any number of values, keeps the last of
/// duplicate keys and stops at a NUL byte as if the input ended there. `parse_json` closes
/// those gaps: its parser callback refuses nesting deeper than `json_limits::max_depth`, more
/// than `json_limits::max_values` values and a key repeated within an object (a duplicate
/// tensor name would be ambiguous) as soon as the parser meets them, before the rest is built;
/// a NUL byte anywhere is refused up front. Numbers beyond double (`1e400`) are nlohmann's own
/// error; a UTF-8 byte-order mark before the value is skipped, as RFC 8259 allows. Every
/// failure is a `surgeon::io_error`.
#pragma once

#include <surgeon/error.hpp>
#include <surgeon/io/detail/bytes.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace surgeon::io::detail {

/// Limits that bound the work and memory spent on a hostile document.
struct json_limits {
  /// Deepest nesting of arrays and objects accepted (a top-level array is depth 1).
  int max_depth = 64;
  /// Most values (of any kind, containers included; an object's keys are bounded by its values)
  /// in one document: about 1M, i.e. some 100 MB of parsed tree at most, and room for ~150k
  /// safetensors tensors (7 values each).
  std::size_t max_values = std::size_t{1} << 20;
};

/// `text` parsed as one JSON value, within `limits`. `what` names the document in errors.
/// @throws io_error naming `what` (and the byte offset, for syntax errors) on malformed JSON, a
///         NUL byte, a number beyond double, a duplicate key, or a document beyond `limits`.
/// Cost: O(text.size() + values log keys); memory proportional to the accepted document.
inline nlohmann::json parse_json(std::string_view text, std::string_view what,
                                 const json_limits& limits = {}) {
  using json = nlohmann::json;
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    SURGEON_THROW(io_error, "{}: invalid JSON at byte {}: a NUL byte", what, nul);
  }
  // The keys seen so far in every open container (arrays keep an empty set), innermost last.
  std::vector<std::set<std::string>> open;
  std::size_t values = 0;
  const auto count_value = [&] {
    if (++values > limits.max_values) {
      SURGEON_THROW(io_error, "{}: invalid JSON: more than {} values", what, limits.max_values);
    }
  };
  const json::parser_callback_t check = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        count_value();
        if (open.size() >= static_cast<std::size_t>(limits.max_depth)) {
          SURGEON_THROW(io_error, "{}: invalid JSON: nesting deeper than {}", what, limits.max_depth);
        }
        open.emplace_back();
        break;
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        open.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open.back().insert(parsed.get_ref<const std::string&>()).second) {
          SURGEON_THROW(io_error, "{}: invalid JSON: duplicate key '{}'", what,
                        shorten(parsed.get_ref<const std::string&>()));
        }
        break;
      case json::parse_event_t::value:
        count_value();
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    const std::string_view message = e.what();  // "[json.exception.<kind>.<id>] <reason>"
    const std::size_t tag_end = message.find("] ");
    const std::string_view reason = tag_end == std::string_view::npos ? message : message.substr(tag_end + 2);
    if (const auto* syntax = dynamic_cast<const json::parse_error*>(&e)) {
      // nlohmann counts bytes from 1; report the 0-based offset of the offending byte.
      SURGEON_THROW(io_error, "{}: invalid JSON at byte {}: {}", what,
                    syntax->byte > 0 ? syntax->byte - 1 : 0, reason);
    }
    SURGEON_THROW(io_error, "{}: invalid JSON: {}", what, reason);  // e.g. a number beyond double
  }
}

/// True when `text` is valid UTF-8 (RFC 3629: no overlong forms, surrogates or code points
/// above U+10FFFF), i.e. when nlohmann-json can write it as a JSON string. Cost: O(size).
inline bool is_valid_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace surgeon::io::detail

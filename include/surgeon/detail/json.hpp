/// @file json.hpp
/// @brief A minimal, strict JSON (RFC 8259) parser and writer for model-file headers.
///
/// Built for untrusted input such as safetensors headers: the parser never recurses deeper than
/// `parse_limits::max_depth`, never creates more than `parse_limits::max_values` values (so the
/// parsed tree stays proportional to a bounded input), and reports every error as a
/// `surgeon::io_error` that names the byte offset. It is strict where RFC 8259 is: no comments,
/// no trailing commas, no leading zeros, no unescaped control characters, strings must be valid
/// UTF-8 (no overlong forms, no surrogates), `\u` escapes must pair surrogates, and duplicate
/// object keys are rejected (a duplicate tensor name would be ambiguous). Numbers without a
/// fraction or exponent are integers and must fit `std::int64_t`; the others are doubles and
/// must be finite.
///
/// The writer escapes `"`, `\` and every control character, passes valid UTF-8 through, and
/// writes doubles in their shortest round-trip form.
#pragma once

#include <surgeon/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <locale>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace surgeon::detail::json {

/// @brief The kind of a JSON value. Integers (no fraction, no exponent) and other numbers are
/// kept apart so that sizes and offsets are read exactly.
enum class kind : std::uint8_t { null, boolean, integer, number, string, array, object };

/// @brief The lower-case name of a kind ("null", "boolean", "integer", "number", "string",
/// "array", "object"), for error messages. Cost: O(1).
inline constexpr std::string_view kind_name(kind k) noexcept {
  switch (k) {
    case kind::null:
      return "null";
    case kind::boolean:
      return "boolean";
    case kind::integer:
      return "integer";
    case kind::number:
      return "number";
    case kind::string:
      return "string";
    case kind::array:
      return "array";
    case kind::object:
      return "object";
  }
  return "unknown";
}

/// @brief Limits that bound the work and memory spent on a hostile document.
struct parse_limits {
  /// Deepest nesting of arrays and objects accepted (a top-level array is depth 1).
  int max_depth = 64;
  /// Most values (of any kind, containers included) in one document: about 1M, i.e. some 100 MB
  /// of parsed tree at most, and room for ~150k safetensors tensors (7 values each).
  std::size_t max_values = std::size_t{1} << 20;
};

class parser;

/// @brief A JSON value: null, boolean, integer, number, string, array or object.
///
/// Objects keep their members in document order (`keys()[i]` names `items()[i]`); arrays keep
/// their elements in `items()`. Accessors of the wrong kind throw `logic_error`: callers check
/// `type()` (or an `is_*` predicate) first when the document is untrusted.
/// Cost: copies are deep; moves are O(1).
class value {
 public:
  /// @brief A null value.
  value() = default;

  /// @brief A boolean value. Cost: O(1).
  static value make_boolean(bool b) {
    value v;
    v.kind_ = kind::boolean;
    v.integer_ = b ? 1 : 0;
    return v;
  }
  /// @brief An integer value. Cost: O(1).
  static value make_integer(std::int64_t i) {
    value v;
    v.kind_ = kind::integer;
    v.integer_ = i;
    return v;
  }
  /// @brief A (non-integer) number. Non-finite numbers can be held but not serialised.
  /// Cost: O(1).
  static value make_number(double d) {
    value v;
    v.kind_ = kind::number;
    v.number_ = d;
    return v;
  }
  /// @brief A string value (UTF-8). Cost: O(1) (the string is moved in).
  static value make_string(std::string s) {
    value v;
    v.kind_ = kind::string;
    v.string_ = std::move(s);
    return v;
  }
  /// @brief An empty array. Cost: O(1).
  static value make_array() {
    value v;
    v.kind_ = kind::array;
    return v;
  }
  /// @brief An empty object. Cost: O(1).
  static value make_object() {
    value v;
    v.kind_ = kind::object;
    return v;
  }

  /// @brief The kind of this value. Cost: O(1).
  kind type() const noexcept { return kind_; }
  bool is_null() const noexcept { return kind_ == kind::null; }
  bool is_boolean() const noexcept { return kind_ == kind::boolean; }
  bool is_integer() const noexcept { return kind_ == kind::integer; }
  /// @brief True for integers and other numbers alike.
  bool is_number() const noexcept { return kind_ == kind::integer || kind_ == kind::number; }
  bool is_string() const noexcept { return kind_ == kind::string; }
  bool is_array() const noexcept { return kind_ == kind::array; }
  bool is_object() const noexcept { return kind_ == kind::object; }

  /// @brief The boolean. @throws logic_error if this is not a boolean. Cost: O(1).
  bool as_boolean() const {
    expect_kind(kind::boolean);
    return integer_ != 0;
  }
  /// @brief The integer. @throws logic_error if this is not an integer. Cost: O(1).
  std::int64_t as_integer() const {
    expect_kind(kind::integer);
    return integer_;
  }
  /// @brief The number as a double (integers are converted, possibly rounding beyond 2^53).
  /// @throws logic_error if this is neither an integer nor a number. Cost: O(1).
  double as_number() const {
    SURGEON_EXPECTS(is_number(), "json::value: a {} is not a number", kind_name(kind_));
    return kind_ == kind::integer ? static_cast<double>(integer_) : number_;
  }
  /// @brief The string. @throws logic_error if this is not a string. Cost: O(1).
  const std::string& as_string() const {
    expect_kind(kind::string);
    return string_;
  }

  /// @brief Number of elements (array) or members (object).
  /// @throws logic_error for scalars. Cost: O(1).
  std::size_t size() const {
    expect_container();
    return items_.size();
  }
  /// @brief The elements of an array, or the member values of an object (in document order).
  /// @throws logic_error for scalars. Cost: O(1).
  const std::vector<value>& items() const {
    expect_container();
    return items_;
  }
  /// @brief The member names of an object, parallel to `items()`.
  /// @throws logic_error if this is not an object. Cost: O(1).
  const std::vector<std::string>& keys() const {
    expect_kind(kind::object);
    return keys_;
  }
  /// @brief The member named `key`, or null when there is none.
  /// @throws logic_error if this is not an object. Cost: O(size()) string comparisons.
  const value* find(std::string_view key) const {
    expect_kind(kind::object);
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i] == key) return &items_[i];
    }
    return nullptr;
  }

  /// @brief Appends an element to an array.
  /// @throws logic_error if this is not an array. Cost: amortised O(1).
  void push_back(value v) {
    expect_kind(kind::array);
    items_.push_back(std::move(v));
  }
  /// @brief Appends a member to an object.
  /// @throws logic_error if this is not an object or `key` is already present.
  /// Cost: O(size()) (the duplicate check).
  void insert(std::string key, value v) {
    SURGEON_EXPECTS(find(key) == nullptr, "json::value::insert: duplicate key '{}'", key);
    keys_.push_back(std::move(key));
    items_.push_back(std::move(v));
  }

  /// @brief Deep equality: same kind and contents; object members compare in order.
  /// Cost: O(size of both trees).
  friend bool operator==(const value& a, const value& b) {
    if (a.kind_ != b.kind_) return false;
    switch (a.kind_) {
      case kind::null:
        return true;
      case kind::boolean:
      case kind::integer:
        return a.integer_ == b.integer_;
      case kind::number:
        return a.number_ == b.number_;
      case kind::string:
        return a.string_ == b.string_;
      case kind::array:
        return a.items_ == b.items_;
      case kind::object:
        return a.keys_ == b.keys_ && a.items_ == b.items_;
    }
    return false;
  }
  friend bool operator!=(const value& a, const value& b) { return !(a == b); }

 private:
  friend class parser;

  void expect_kind(kind k) const {
    SURGEON_EXPECTS(kind_ == k, "json::value: expected a value of kind {}, this one is of kind {}",
                    kind_name(k), kind_name(kind_));
  }
  void expect_container() const {
    SURGEON_EXPECTS(kind_ == kind::array || kind_ == kind::object,
                    "json::value: a {} is neither an array nor an object", kind_name(kind_));
  }

  kind kind_ = kind::null;
  std::int64_t integer_ = 0;  // also holds booleans
  double number_ = 0.0;
  std::string string_;
  std::vector<value> items_;
  std::vector<std::string> keys_;
};

/// @brief Length of the well-formed UTF-8 sequence starting at `text[pos]`, or 0 when the bytes
/// there are not one (truncated, overlong, a surrogate, above U+10FFFF, a stray continuation).
/// Cost: O(1).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t pos) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const std::size_t left = text.size() - pos;
  const unsigned char c = byte(pos);
  if (c < 0x80) return 1;
  const auto cont = [&](std::size_t i) { return (byte(i) & 0xC0U) == 0x80U; };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(pos + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(pos + 1) || !cont(pos + 2)) return 0;
    const unsigned char c1 = byte(pos + 1);
    if (c == 0xE0 && c1 < 0xA0) return 0;  // overlong
    if (c == 0xED && c1 > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(pos + 1) || !cont(pos + 2) || !cont(pos + 3)) return 0;
    const unsigned char c1 = byte(pos + 1);
    if (c == 0xF0 && c1 < 0x90) return 0;  // overlong
    if (c == 0xF4 && c1 > 0x8F) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

/// @brief Offset of the first byte of `text` that does not start a well-formed UTF-8 sequence,
/// or `std::string_view::npos` when all of `text` is valid UTF-8. Cost: O(text.size()).
inline std::size_t find_invalid_utf8(std::string_view text) noexcept {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t n = utf8_sequence_length(text, pos);
    if (n == 0) return pos;
    pos += n;
  }
  return std::string_view::npos;
}

/// @brief True when `text` is well-formed UTF-8. Cost: O(text.size()).
inline bool is_valid_utf8(std::string_view text) noexcept {
  return find_invalid_utf8(text) == std::string_view::npos;
}

/// @brief The recursive-descent parser behind `parse()`; use `parse()`.
class parser {
 public:
  /// @brief Prepares to parse `text`; `context` prefixes every error message.
  parser(std::string_view text, std::string_view context, const parse_limits& limits)
      : text_(text), context_(context), limits_(limits) {}

  /// @brief Parses exactly one JSON value surrounded by optional whitespace.
  /// @throws io_error on malformed input or exceeded limits.
  value parse_document() {
    skip_whitespace();
    value v = parse_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail(fmt::format("{} after the JSON value", describe_here()));
    return v;
  }

 private:
  [[noreturn]] void fail_at(std::size_t offset, std::string_view reason) const {
    SURGEON_THROW(io_error, "{}: {} at byte {}", context_, reason, offset);
  }
  [[noreturn]] void fail(std::string_view reason) const { fail_at(pos_, reason); }

  bool at_end() const noexcept { return pos_ >= text_.size(); }
  char peek() const noexcept { return text_[pos_]; }
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

  /// "unexpected end of input", "unexpected character 'x'" or "unexpected byte 0x8f".
  std::string describe_here() const {
    if (at_end()) return "unexpected end of input";
    const auto c = static_cast<unsigned char>(peek());
    if (c >= 0x20 && c < 0x7F) return fmt::format("unexpected character '{}'", static_cast<char>(c));
    return fmt::format("unexpected byte 0x{:02x}", static_cast<unsigned>(c));
  }

  void skip_whitespace() noexcept {
    while (!at_end()) {
      const char c = peek();
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect_char(char c, std::string_view what) {
    if (at_end() || peek() != c) fail(fmt::format("{} where {} was expected", describe_here(), what));
    ++pos_;
  }

  void count_value() {
    if (++values_ > limits_.max_values)
      fail(fmt::format("more than {} values in the document", limits_.max_values));
  }

  value parse_value(int depth) {
    count_value();
    if (at_end()) fail("unexpected end of input where a value was expected");
    switch (peek()) {
      case '{':
        return parse_object(enter(depth));
      case '[':
        return parse_array(enter(depth));
      case '"':
        return value::make_string(parse_string());
      case 't':
        expect_literal("true");
        return value::make_boolean(true);
      case 'f':
        expect_literal("false");
        return value::make_boolean(false);
      case 'n':
        expect_literal("null");
        return value();
      default:
        if (peek() == '-' || is_digit(peek())) return parse_number();
        fail(fmt::format("{} where a value was expected", describe_here()));
    }
  }

  int enter(int depth) const {
    if (depth >= limits_.max_depth) fail(fmt::format("nesting deeper than {} levels", limits_.max_depth));
    return depth + 1;
  }

  void expect_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal)
      fail(fmt::format("invalid literal (expected '{}')", literal));
    pos_ += literal.size();
  }

  value parse_array(int depth) {
    ++pos_;  // '['
    value array = value::make_array();
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return array;
    }
    while (true) {
      skip_whitespace();
      array.items_.push_back(parse_value(depth));
      skip_whitespace();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      expect_char(']', "',' or ']'");
      return array;
    }
  }

  value parse_object(int depth) {
    ++pos_;  // '{'
    value object = value::make_object();
    std::vector<std::size_t> key_offsets;
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return object;
    }
    while (true) {
      skip_whitespace();
      if (at_end() || peek() != '"') fail(fmt::format("{} where a string key was expected", describe_here()));
      key_offsets.push_back(pos_);
      object.keys_.push_back(parse_string());
      skip_whitespace();
      expect_char(':', "':'");
      skip_whitespace();
      object.items_.push_back(parse_value(depth));
      skip_whitespace();
      if (!at_end() && peek() == ',') {
        ++pos_;
        continue;
      }
      expect_char('}', "',' or '}'");
      break;
    }
    reject_duplicate_keys(object.keys_, key_offsets);
    return object;
  }

  void reject_duplicate_keys(const std::vector<std::string>& keys,
                             const std::vector<std::size_t>& offsets) const {
    if (keys.size() < 2) return;
    std::vector<std::size_t> order(keys.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return keys[a] != keys[b] ? keys[a] < keys[b] : a < b; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (keys[order[i - 1]] == keys[order[i]]) {
        fail_at(offsets[order[i]], fmt::format("duplicate object key \"{}\"", shorten(keys[order[i]])));
      }
    }
  }

  static std::string shorten(std::string_view s) {
    constexpr std::size_t max_chars = 80;
    if (s.size() <= max_chars) return std::string(s);
    std::size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0U) == 0x80U) --cut;
    return std::string(s.substr(0, cut)) + "...";
  }

  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0U | (cp >> 6)));
      out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0U | (cp >> 12)));
      out.push_back(static_cast<char>(0x80U | ((cp >> 6) & 0x3FU)));
      out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
    } else {
      out.push_back(static_cast<char>(0xF0U | (cp >> 18)));
      out.push_back(static_cast<char>(0x80U | ((cp >> 12) & 0x3FU)));
      out.push_back(static_cast<char>(0x80U | ((cp >> 6) & 0x3FU)));
      out.push_back(static_cast<char>(0x80U | (cp & 0x3FU)));
    }
  }

  /// Reads the 4 hex digits of a \u escape at pos_.
  std::uint32_t parse_hex4() {
    std::uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      if (at_end()) fail("unexpected end of input in a \\u escape");
      const char c = peek();
      std::uint32_t digit = 0;
      if (c >= '0' && c <= '9') {
        digit = static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        fail(fmt::format("{} in a \\u escape (4 hex digits expected)", describe_here()));
      }
      cp = cp * 16 + digit;
      ++pos_;
    }
    return cp;
  }

  void parse_escape(std::string& out) {
    const std::size_t start = pos_;
    ++pos_;  // '\'
    if (at_end()) fail("unexpected end of input in an escape sequence");
    const char c = peek();
    ++pos_;
    switch (c) {
      case '"':
        out.push_back('"');
        return;
      case '\\':
        out.push_back('\\');
        return;
      case '/':
        out.push_back('/');
        return;
      case 'b':
        out.push_back('\b');
        return;
      case 'f':
        out.push_back('\f');
        return;
      case 'n':
        out.push_back('\n');
        return;
      case 'r':
        out.push_back('\r');
        return;
      case 't':
        out.push_back('\t');
        return;
      case 'u':
        break;
      default:
        --pos_;
        fail(fmt::format("invalid escape sequence ({})", describe_here()));
    }
    std::uint32_t cp = parse_hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at(start, "unpaired low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (text_.substr(pos_, 2) != "\\u") fail_at(start, "unpaired high surrogate in a \\u escape");
      pos_ += 2;
      const std::uint32_t low = parse_hex4();
      if (low < 0xDC00 || low > 0xDFFF) fail_at(start, "unpaired high surrogate in a \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, cp);
  }

  std::string parse_string() {
    const std::size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) fail_at(start, "unterminated string");
      // Copy the longest run of plain ASCII in one go.
      std::size_t run = pos_;
      while (run < text_.size()) {
        const auto b = static_cast<unsigned char>(text_[run]);
        if (b < 0x20 || b >= 0x80 || b == '"' || b == '\\') break;
        ++run;
      }
      out.append(text_.data() + pos_, run - pos_);
      pos_ = run;
      if (at_end()) fail_at(start, "unterminated string");
      const auto c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c == '\\') {
        parse_escape(out);
      } else if (c < 0x20) {
        fail(fmt::format("unescaped control character 0x{:02x} in a string", static_cast<unsigned>(c)));
      } else {
        const std::size_t n = utf8_sequence_length(text_, pos_);
        if (n == 0) fail("invalid UTF-8 in a string");
        out.append(text_.data() + pos_, n);
        pos_ += n;
      }
    }
  }

  value parse_number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (at_end() || !is_digit(peek())) fail(fmt::format("{} in a number (digit expected)", describe_here()));
    if (peek() == '0') {
      ++pos_;
      if (!at_end() && is_digit(peek())) fail_at(start, "number with a leading zero");
    } else {
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    bool integral = true;
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (at_end() || !is_digit(peek()))
        fail(fmt::format("{} in a number (digit expected after '.')", describe_here()));
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (at_end() || !is_digit(peek()))
        fail(fmt::format("{} in an exponent (digit expected)", describe_here()));
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    const std::string_view token = text_.substr(start, pos_ - start);
    if (integral) {
      std::int64_t i = 0;
      const auto result = std::from_chars(token.data(), token.data() + token.size(), i);
      if (result.ec != std::errc() || result.ptr != token.data() + token.size()) {
        fail_at(start, "integer outside the int64 range");
      }
      return value::make_integer(i);
    }
    // The grammar is already checked; the classic locale makes '.' the decimal point whatever
    // the program's global locale is.
    std::istringstream stream{std::string(token)};
    stream.imbue(std::locale::classic());
    double d = 0.0;
    stream >> d;
    if (stream.fail() || !std::isfinite(d)) fail_at(start, "number outside the double range");
    return value::make_number(d);
  }

  std::string_view text_;
  std::string_view context_;
  parse_limits limits_;
  std::size_t pos_ = 0;
  std::size_t values_ = 0;
};

/// @brief Parses one JSON document (optionally surrounded by whitespace).
/// @param text the document; it need not be NUL-terminated.
/// @param context prefix of every error message, e.g. "model.safetensors: header".
/// @param limits nesting depth and value-count caps.
/// @throws io_error "<context>: <reason> at byte <offset>" for malformed input, invalid UTF-8,
///         duplicate keys, integers outside int64, non-finite numbers, or exceeded limits.
/// Cost: O(text.size() + k log k) for objects of k members; recursion depth at most
/// `limits.max_depth`; memory O(text.size()).
inline value parse(std::string_view text, std::string_view context = "JSON",
                   const parse_limits& limits = {}) {
  return parser(text, context, limits).parse_document();
}

/// @brief Appends `s` to `out` as a quoted JSON string, escaping `"`, `\` and control
/// characters (as `\n`, `\t`, ... or `\u00XX`); other UTF-8 is passed through.
/// @throws logic_error if `s` is not valid UTF-8. Cost: O(s.size()).
inline void append_string(std::string& out, std::string_view s) {
  const std::size_t bad = find_invalid_utf8(s);
  SURGEON_EXPECTS(bad == std::string_view::npos, "json: string is not valid UTF-8 (byte {})", bad);
  out.push_back('"');
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
}

/// @brief Appends the compact serialisation of `v` (no whitespace) to `out`. Numbers are
/// written in shortest round-trip form and always carry a '.' or an exponent, so they parse
/// back as numbers, not integers.
/// @throws logic_error for non-finite numbers or strings that are not valid UTF-8.
/// Cost: O(size of the tree); recursion as deep as the tree.
inline void append_value(std::string& out, const value& v) {
  switch (v.type()) {
    case kind::null:
      out += "null";
      return;
    case kind::boolean:
      out += v.as_boolean() ? "true" : "false";
      return;
    case kind::integer:
      fmt::format_to(std::back_inserter(out), "{}", v.as_integer());
      return;
    case kind::number: {
      const double d = v.as_number();
      SURGEON_EXPECTS(std::isfinite(d), "json: cannot write the non-finite number {}", d);
      const std::string text = fmt::format("{}", d);
      out += text;
      if (text.find_first_of(".eE") == std::string::npos) out += ".0";
      return;
    }
    case kind::string:
      append_string(out, v.as_string());
      return;
    case kind::array: {
      out.push_back('[');
      bool first = true;
      for (const value& item : v.items()) {
        if (!first) out.push_back(',');
        first = false;
        append_value(out, item);
      }
      out.push_back(']');
      return;
    }
    case kind::object: {
      out.push_back('{');
      const auto& keys = v.keys();
      const auto& items = v.items();
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (i > 0) out.push_back(',');
        append_string(out, keys[i]);
        out.push_back(':');
        append_value(out, items[i]);
      }
      out.push_back('}');
      return;
    }
  }
}

/// @brief The compact serialisation of `v`; `parse(serialize(v)) == v` for every serialisable
/// value. @throws logic_error as `append_value`. Cost: O(size of the tree).
inline std::string serialize(const value& v) {
  std::string out;
  append_value(out, v);
  return out;
}

}  // namespace surgeon::detail::json

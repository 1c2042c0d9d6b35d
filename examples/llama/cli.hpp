/// @file cli.hpp
/// @brief The command-line conventions the Llama tools share (surgeon-prune, surgeon-ppl and the
/// benchmarks' layer-prune, llama-factors, llama-check), on CLI11: strictly read decimal numbers,
/// every flag's default in `--help`, the last of a repeated flag winning, and one exit status per
/// kind of failure (0 after `--help`, 2 with one line on stderr after a bad command line).
///
/// Header-only and free of the rest of the runtime (CLI11 and fmt only), so that layer-prune,
/// which does not link the Llama runtime, can include it too.
#pragma once

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace surgeon::llama::cli {

/// @brief Exit status of a bad command line (and, in the tools, of a bad input found before the
/// work starts).
inline constexpr int bad_usage_status = 2;

/// @brief `text` as a whole decimal integer; nullopt when it is empty, has anything else in it or
/// overflows `long long`. O(length).
///
/// CLI11's own conversion reads base 0 ("010" is eight, "0x10" sixteen) and saturates on
/// overflow; the tools have always read plain decimal and refused what does not fit.
inline std::optional<long long> read_integer(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0' || errno != 0) return std::nullopt;
  return value;
}

/// @brief `text` as a whole finite real number (strtod); nullopt when it is empty, has anything
/// else in it, overflows or underflows. O(length).
inline std::optional<double> read_real(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || errno != 0 || !std::isfinite(value)) return std::nullopt;
  return value;
}

/// @brief A CLI11 transform that accepts a decimal integer `>= least` (see `read_integer`) and
/// rewrites it in canonical decimal, so that CLI11's base-0 conversion that follows reads the
/// same number ("010" stays ten).
inline CLI::Validator integer_at_least(long long least) {
  return CLI::Validator(
      [least](std::string& text) -> std::string {
        const std::optional<long long> value = read_integer(text);
        if (!value || *value < least) return fmt::format("needs an integer >= {}, got '{}'", least, text);
        text = std::to_string(*value);
        return {};
      },
      "");
}

/// @brief A CLI11 transform that accepts a finite real number (see `read_real`) and rewrites it
/// as a hexadecimal float: CLI11 converts through `strtold` and then rounds to double, which can
/// land one bit away from what `strtod` reads; the hexadecimal form converts exactly.
inline CLI::Validator real_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<double> value = read_real(text);
        if (!value) return fmt::format("needs a number, got '{}'", text);
        text = fmt::format("{:a}", *value);
        return {};
      },
      "");
}

/// @brief A CLI11 check: a finite real number `>= least` (see `read_real`); the text is left as
/// given (for options read as text, like "auto|GB").
inline CLI::Validator real_at_least(double least) {
  return CLI::Validator(
      [least](std::string& text) -> std::string {
        const std::optional<double> value = read_real(text);
        if (!value || *value < least) return fmt::format("needs a number >= {}, got '{}'", least, text);
        return {};
      },
      "");
}

/// @brief A CLI11 check: `keyword` itself, or whatever `otherwise` accepts (e.g. "auto" or an
/// integer). The text is left as given; the tool converts it after parsing. Validators here word
/// their messages "needs X, got 'y'", which this one extends to "needs <keyword> or X, got 'y'".
inline CLI::Validator keyword_or(std::string keyword, CLI::Validator otherwise) {
  return CLI::Validator(
      [keyword, otherwise](std::string& text) -> std::string {
        if (text == keyword) return {};
        std::string copy = text;  // checked on a copy: the original stays what the tool parses
        std::string problem = otherwise(copy);
        // "needs X, got 'y'" becomes "needs <keyword> or X, got 'y'".
        if (problem.rfind("needs ", 0) == 0) problem.insert(6, keyword + " or ");
        return problem;
      },
      "");
}

/// @brief Gives `app` the tools' conventions, before any option is added: every option shows its
/// default in `--help`, and a repeated option takes its last value, as the tools always did
/// (options that collect every value, like `--eval`, say so themselves).
inline void set_conventions(CLI::App& app) {
  app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.get_formatter()->column_width(32);
}

/// @brief Throws the CLI11 error `parse` reports as a bad command line: for rules between flags
/// that the tool checks after CLI11 has read them.
[[noreturn]] inline void refuse(const std::string& message) {
  throw CLI::ValidationError(message);
}

/// @brief Reads the command line into `app`, then runs `check()` (the rules between flags, which
/// call `refuse`). Returns nullopt when the tool should go on, or the status to exit with: 0 after
/// `--help` (printed on stdout), `bad_usage_status` after a bad command line, with one line on
/// stderr, "<tool>: <reason> (see <tool> --help)". Never exits by itself.
template <class Check>
std::optional<int> parse(CLI::App& app, int argc, char** argv, Check&& check) {
  try {
    app.parse(argc, argv);
    std::forward<Check>(check)();
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{}: {} (see {} --help)\n", app.get_name(), e.what(), app.get_name());
    return bad_usage_status;
  }
  return std::nullopt;
}

/// @brief `parse` without rules between flags.
inline std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  return parse(app, argc, argv, [] {});
}

}  // namespace surgeon::llama::cli

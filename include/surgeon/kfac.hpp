/// @file kfac.hpp
/// @brief K-FAC factor accumulation (METHOD.md §1): exact running means of `x xᵀ` over token rows.
///
/// One `factor_accumulator` builds one Kronecker factor: `A = (1/N) Σ_n ã_n ã_nᵀ` from a layer's
/// inputs (`ã = [a; 1]` with bias augmentation) or `G = (1/N) Σ_n g_n g_nᵀ` from the gradients at
/// its outputs. It keeps the exact sum and the token count, so that the mean is exact, two
/// accumulators merge exactly (data-parallel or resumed runs), and the state can be saved and
/// loaded. `factor_bank` shares one accumulator between layers that read the same input (Llama's
/// q/k/v, and gate/up), by key.
///
/// Scale convention (used everywhere in surgeon): factors are exact means, sum / count.
#pragma once

#include <surgeon/config.hpp>
#include <surgeon/error.hpp>
#include <surgeon/io/safetensors.hpp>
#include <surgeon/types.hpp>
#include <surgeon/view.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace surgeon {

/// @brief How a `factor_accumulator` combines batches.
struct accumulator_options {
  /// Append a constant 1 to every row (bias augmentation, METHOD.md §1): the factor then has order
  /// `dim + 1` and its last row/column holds the column sums and the count.
  bool bias = false;
  /// Unset: exact running mean over every token seen (the default, mergeable). Set to β in
  /// (0, 1): exponential moving average of the per-batch means, `M ← β M + (1 − β) B`, where the
  /// first batch initialises M. EMA state cannot be merged exactly, so `merge` rejects it.
  std::optional<double> ema_decay;
};

namespace detail {

/// What every K-FAC accumulator keeps beside its state, whatever memory holds the state (host
/// `factor_accumulator`, device `cuda::device_factor_accumulator`): dimension, options, token
/// count, their checks and the EMA rule.
class accumulator_bookkeeping {
 public:
  /// @brief Number of input features (without the bias 1).
  index_t dim() const { return dim_; }
  /// @brief Order of the factor: `dim() + 1` with bias augmentation, else `dim()`.
  index_t size() const { return dim_ + (options_.bias ? 1 : 0); }
  /// @brief True when rows are bias-augmented with a constant 1 (`options().bias`). O(1).
  bool has_bias() const { return options_.bias; }
  /// @brief True when the accumulator keeps an exponential moving average (`options().ema_decay` set). O(1).
  bool is_ema() const { return options_.ema_decay.has_value(); }
  /// @brief The options the accumulator was constructed with. O(1).
  const accumulator_options& options() const { return options_; }
  /// @brief Token rows seen so far.
  std::int64_t count() const { return count_; }
  /// @brief True when no token rows have been added yet. O(1).
  bool empty() const { return count_ == 0; }

 protected:
  /// @throws logic_error "`who`: …" if `dim < 1`, `dim > 2^20` or the EMA decay is not in (0, 1).
  accumulator_bookkeeping(index_t dim, accumulator_options options, const char* who)
      : dim_(dim), options_(options) {
    SURGEON_EXPECTS(dim >= 1, "{}: dimension must be at least 1, got {}", who, dim);
    SURGEON_EXPECTS(dim <= (index_t{1} << 20), "{}: dimension {} is implausibly large", who, dim);
    if (options_.ema_decay) {
      const double beta = *options_.ema_decay;
      SURGEON_EXPECTS(beta > 0.0 && beta < 1.0, "{}: EMA decay must be in (0, 1), got {}", who, beta);
    }
  }

  /// The weights of `state ← alpha·XᵀX + beta·state` for a batch of `rows` tokens: (1, 1) for a sum;
  /// for an EMA with decay β, the first batch's mean replaces the state and later ones mix in with
  /// weight 1 − β, each batch's mean weighted as one step.
  template <typename T>
  std::pair<T, T> batch_weights(index_t rows) const {
    if (!is_ema()) return {T(1), T(1)};
    const double decay = *options_.ema_decay;
    return {static_cast<T>((count_ == 0 ? 1.0 : 1.0 - decay) / static_cast<double>(rows)),
            static_cast<T>(count_ == 0 ? 0.0 : decay)};
  }

  index_t dim_;
  accumulator_options options_;
  std::int64_t count_ = 0;
};

}  // namespace detail

/// @brief Accumulates one K-FAC factor from token rows `[tokens, dim]` (host views).
///
/// @tparam T accumulation precision, `float` or `double`. Input may be float or double either way;
///         float input into a double accumulator is widened before the products, so the sums are
///         formed in double.
///
/// Storage: one dense `size() x size()` buffer of T whose lower triangle is the state (a blocked
/// symmetric rank-k update writes nothing else); `sum()`/`mean()` return the symmetrised matrix.
/// Not thread-safe: one accumulator per thread, then `merge`.
template <typename T>
class factor_accumulator : public detail::accumulator_bookkeeping {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "factor_accumulator<float|double>");

 public:
  /// @brief The accumulation precision `T` (`float` or `double`).
  using value_type = T;

  /// @brief An empty accumulator for inputs of `dim` features.
  /// @throws logic_error if `dim < 1` or the EMA decay is not in (0, 1).
  explicit factor_accumulator(index_t dim, accumulator_options options = {})
      : accumulator_bookkeeping(dim, options, "factor_accumulator") {
    state_.assign(static_cast<std::size_t>(size() * size()), T(0));
  }

  /// @brief Adds the token rows of `x` (`[tokens, dim]`, host, any leading dimension).
  ///
  /// Dispatches to the backend of `ctx` by argument-dependent lookup (`cpu::rank_k_update`).
  /// Cost: tokens·size()² flops (a symmetric rank-k update: half of the GEMM `xᵀx`), plus one
  /// O(tokens·dim) pass that rejects non-finite input.
  /// @throws logic_error if `x` has no rows, `x.cols() != dim()`, or holds a NaN or infinity.
  template <typename Context, typename In>
  void add(Context& ctx, host_matrix_view<const In> x) {
    static_assert(std::is_floating_point_v<In>, "factor_accumulator::add: float or double input");
    SURGEON_EXPECTS(x.rows() > 0, "factor_accumulator::add: empty input (0 token rows)");
    SURGEON_EXPECTS(x.cols() == dim_, "factor_accumulator::add: input is [{}, {}], expected [tokens, {}]",
                    x.rows(), x.cols(), dim_);
    check_finite(x);
    const index_t n = size();
    const auto [alpha, beta] = batch_weights<T>(x.rows());
    // x occupies the leading dim x dim block of the column-major state (leading dimension n).
    if (options_.bias) {
      // The dim x dim block through the kernel (column stride n); the bias row, which holds the
      // column sums and the count, by hand.
      rank_k_update(ctx, x, alpha, beta, state_.data(), dim_, n);
      T* bias_row = state_.data() + dim_;  // element (dim, j) at j*n + dim
      for (index_t j = 0; j < dim_; ++j) {
        double column_sum = 0.0;
        for (index_t t = 0; t < x.rows(); ++t) column_sum += static_cast<double>(x(t, j));
        bias_row[j * n] = static_cast<T>(beta * bias_row[j * n] + alpha * static_cast<T>(column_sum));
      }
      T& corner = state_[static_cast<std::size_t>(dim_ * n + dim_)];
      corner = static_cast<T>(beta * corner + alpha * static_cast<T>(x.rows()));
    } else {
      rank_k_update(ctx, x, alpha, beta, state_.data(), n, n);
    }
    count_ += x.rows();
  }

  /// @copydoc add
  template <typename Context, typename In>
  void add(Context& ctx, host_matrix_view<In> x) {
    add(ctx, host_matrix_view<const In>(x));
  }

  /// @brief Adds another accumulator's tokens: afterwards `*this` equals one accumulator fed with
  /// both inputs (exact, up to the floating-point order of the sums).
  /// @throws logic_error if the dimensions or bias settings differ, or either side is an EMA.
  void merge(const factor_accumulator& other) {
    SURGEON_EXPECTS(other.dim_ == dim_ && other.options_.bias == options_.bias,
                    "factor_accumulator::merge: shapes differ ({}{} vs {}{})", dim_,
                    options_.bias ? "+bias" : "", other.dim_, other.options_.bias ? "+bias" : "");
    SURGEON_EXPECTS(!is_ema() && !other.is_ema(),
                    "factor_accumulator::merge: exponential-moving-average state cannot be merged exactly");
    for (std::size_t k = 0; k < state_.size(); ++k) state_[k] += other.state_[k];
    count_ += other.count_;
  }

  /// @brief Forgets every token (keeps dimension and options).
  void reset() {
    std::fill(state_.begin(), state_.end(), T(0));
    count_ = 0;
  }

  /// @brief The symmetric sum `Σ ã ãᵀ` as a `[size, size]` matrix of double.
  /// @throws logic_error in EMA mode (there is no sum, only a mean).
  host_matrix<double> sum() const {
    SURGEON_EXPECTS(!is_ema(), "factor_accumulator::sum: an EMA accumulator holds a mean, not a sum");
    return symmetrised(1.0);
  }

  /// @brief The factor: the exact mean `(1/N) Σ ã ãᵀ` (or the EMA), `[size, size]`, double.
  /// Cost: O(size²).
  /// @throws logic_error if no token was added.
  host_matrix<double> mean() const {
    SURGEON_EXPECTS(count_ > 0, "factor_accumulator::mean: no tokens were added");
    return symmetrised(is_ema() ? 1.0 : 1.0 / static_cast<double>(count_));
  }

  /// @brief The raw state: column-major `size x size`, lower triangle valid. For backends.
  const T* lower_data() const { return state_.data(); }

  /// @brief Hands the raw state (column-major `size x size`, lower triangle valid) and the token
  /// count to `combine(T* state, index_t size, std::int64_t& count)`, which may change both in
  /// place: how a distributed run sums the accumulators of several processes (the driver's
  /// `detail::reduce_factor_state`) without a copy of the state.
  /// @throws logic_error in EMA mode (an EMA is not a sum and cannot be combined exactly).
  template <typename Combine>
  void combine_state(const Combine& combine) {
    SURGEON_EXPECTS(!is_ema(), "factor_accumulator::combine_state: an EMA accumulator cannot be combined");
    combine(state_.data(), size(), count_);
  }

  /// @brief An accumulator whose state is `lower` (column-major `size x size`, lower triangle
  /// read, as `lower_data`), e.g. a device accumulator's state brought to the host; bit for bit.
  /// @throws logic_error as the constructor, if `lower` does not hold size² values or `count` < 0.
  static factor_accumulator from_state(index_t dim, accumulator_options options, std::int64_t count,
                                       std::vector<T> lower) {
    factor_accumulator result(dim, options);
    SURGEON_EXPECTS(lower.size() == result.state_.size(),
                    "factor_accumulator::from_state: {} values for a {}x{} state", lower.size(),
                    result.size(), result.size());
    SURGEON_EXPECTS(count >= 0, "factor_accumulator::from_state: negative token count {}", count);
    result.state_ = std::move(lower);
    result.count_ = count;
    return result;
  }

  /// @brief Writes the state to `path` in the safetensors format (see `to_safetensors`), through a
  /// temporary file and a rename.
  /// @throws io_error if the file cannot be written.
  void save(const std::string& path) const {
    io::safetensors_writer writer;
    to_safetensors(writer, "factor", "");
    writer.write(path);
  }

  /// @brief Reads an accumulator written by `save`.
  /// @throws io_error if the file is missing, truncated, corrupted or not a surgeon factor.
  static factor_accumulator load(const std::string& path) {
    const io::safetensors_reader reader = io::safetensors_reader::open(path);
    return from_safetensors(reader, "factor", "", path);
  }

  /// @brief Adds this accumulator to a safetensors file under `tensor_name`, with metadata keys
  /// prefixed by `prefix`.
  ///
  /// Format (version 1): tensor `<tensor_name>`, dtype F32 or F64 (= T), shape `[size, size]`,
  /// the full symmetric state (the sum, or the EMA mean); metadata `<prefix>format` =
  /// "surgeon.factor", `<prefix>version` = "1", `<prefix>dim`, `<prefix>bias` ("0"/"1"),
  /// `<prefix>count`, `<prefix>mode` ("sum"/"ema") and, for EMA, `<prefix>decay` (`%.17g`).
  void to_safetensors(io::safetensors_writer& writer, const std::string& tensor_name,
                      const std::string& prefix) const {
    const index_t n = size();
    std::vector<T> full(state_.size());
    for (index_t j = 0; j < n; ++j) {
      for (index_t i = j; i < n; ++i) {
        const T value = state_[static_cast<std::size_t>(j * n + i)];
        full[static_cast<std::size_t>(i * n + j)] = value;
        full[static_cast<std::size_t>(j * n + i)] = value;
      }
    }
    writer.set_metadata(prefix + "format", "surgeon.factor");
    writer.set_metadata(prefix + "version", "1");
    writer.set_metadata(prefix + "dim", std::to_string(dim_));
    writer.set_metadata(prefix + "bias", options_.bias ? "1" : "0");
    writer.set_metadata(prefix + "count", std::to_string(count_));
    writer.set_metadata(prefix + "mode", is_ema() ? "ema" : "sum");
    if (is_ema()) writer.set_metadata(prefix + "decay", fmt::format("{:.17g}", *options_.ema_decay));
    writer.add<T>(tensor_name, {n, n}, full.data());
  }

  /// @brief Reads an accumulator stored by `to_safetensors` under `tensor_name` / `prefix`.
  /// `source` names the file in error messages.
  /// @throws io_error on any inconsistency (missing keys, wrong dtype or shape, bad numbers,
  ///         non-finite or asymmetric state).
  static factor_accumulator from_safetensors(const io::safetensors_reader& reader,
                                             const std::string& tensor_name, const std::string& prefix,
                                             const std::string& source) {
    const auto& meta = reader.metadata();
    auto field = [&](const std::string& key) -> const std::string& {
      const auto it = meta.find(prefix + key);
      if (it == meta.end())
        SURGEON_THROW(io_error, "{}: not a surgeon factor file (no '{}{}')", source, prefix, key);
      return it->second;
    };
    if (field("format") != "surgeon.factor") {
      SURGEON_THROW(io_error, "{}: format is '{}', expected 'surgeon.factor'", source, field("format"));
    }
    if (field("version") != "1")
      SURGEON_THROW(io_error, "{}: unsupported factor version '{}'", source, field("version"));
    const std::int64_t dim = parse_integer(field("dim"), source, "dim");
    const std::int64_t count = parse_integer(field("count"), source, "count");
    const std::string& bias = field("bias");
    const std::string& mode = field("mode");
    if (dim < 1 || dim > (index_t{1} << 20))
      SURGEON_THROW(io_error, "{}: bad factor dimension {}", source, dim);
    if (count < 0) SURGEON_THROW(io_error, "{}: negative token count {}", source, count);
    if (bias != "0" && bias != "1") SURGEON_THROW(io_error, "{}: bad bias flag '{}'", source, bias);
    if (mode != "sum" && mode != "ema")
      SURGEON_THROW(io_error, "{}: bad accumulation mode '{}'", source, mode);
    accumulator_options options;
    options.bias = bias == "1";
    if (mode == "ema") {
      const std::string& text = field("decay");
      char* end = nullptr;
      const double decay = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(decay > 0.0 && decay < 1.0)) {
        SURGEON_THROW(io_error, "{}: bad EMA decay '{}'", source, text);
      }
      options.ema_decay = decay;
    }
    factor_accumulator result(dim, options);
    const index_t n = result.size();
    const io::tensor_info& info = reader.info(tensor_name);
    if (info.shape != std::vector<index_t>{n, n}) {
      SURGEON_THROW(io_error, "{}: tensor '{}' has the wrong shape for a factor of order {}", source,
                    tensor_name, n);
    }
    constexpr io::dtype expected = std::is_same_v<T, float> ? io::dtype::f32 : io::dtype::f64;
    if (info.type != expected) {
      SURGEON_THROW(io_error, "{}: tensor '{}' is {}, this accumulator reads {}", source, tensor_name,
                    io::dtype_name(info.type), io::dtype_name(expected));
    }
    const std::vector<T> full = reader.read<T>(tensor_name);
    for (index_t j = 0; j < n; ++j) {
      for (index_t i = j; i < n; ++i) {
        const T lower = full[static_cast<std::size_t>(i * n + j)];
        const T upper = full[static_cast<std::size_t>(j * n + i)];
        if (!std::isfinite(lower) || !(lower == upper)) {
          SURGEON_THROW(io_error, "{}: factor state is not finite and symmetric at ({}, {})", source, i, j);
        }
        result.state_[static_cast<std::size_t>(j * n + i)] = lower;
      }
    }
    result.count_ = count;
    return result;
  }

 private:
  template <typename In>
  static void check_finite(host_matrix_view<const In> x) {
    for (index_t t = 0; t < x.rows(); ++t) {
      const In* row = x.row(t);
      bool finite = true;
      for (index_t j = 0; j < x.cols(); ++j) finite &= std::isfinite(row[j]);
      if (!finite) {
        for (index_t j = 0; j < x.cols(); ++j) {
          SURGEON_EXPECTS(std::isfinite(row[j]),
                          "factor_accumulator::add: non-finite input {} at row {}, column {}", row[j], t, j);
        }
      }
    }
  }

  static std::int64_t parse_integer(const std::string& text, const std::string& source, const char* key) {
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || end == text.c_str() || *end != '\0' || errno == ERANGE) {
      SURGEON_THROW(io_error, "{}: metadata '{}' is not an integer: '{}'", source, key, text);
    }
    return static_cast<std::int64_t>(value);
  }

  host_matrix<double> symmetrised(double scale) const {
    const index_t n = size();
    host_matrix<double> result(n, n);
    for (index_t j = 0; j < n; ++j) {
      for (index_t i = j; i < n; ++i) {
        const double value = scale * static_cast<double>(state_[static_cast<std::size_t>(j * n + i)]);
        result(i, j) = value;
        result(j, i) = value;
      }
    }
    return result;
  }

  std::vector<T> state_;
};

/// @brief Named K-FAC accumulators shared between layers.
///
/// Layers that read the same input have the same A (METHOD.md §1): define one key per distinct
/// input ("blk.0.attn_in" for q/k/v, "blk.0.ffn_in" for gate/up), bind each layer to its key, and
/// feed each input once. Every layer's G is its own key. Cost: the accumulators' storage only.
template <typename T>
class factor_bank {
 public:
  /// @brief Creates the accumulator `key` (or returns the existing one if it matches).
  /// @throws logic_error if `key` exists with another dimension or options.
  factor_accumulator<T>& define(const std::string& key, index_t dim, accumulator_options options = {}) {
    SURGEON_EXPECTS(!key.empty(), "factor_bank::define: empty key");
    const auto it = factors_.find(key);
    if (it != factors_.end()) {
      const auto& existing = it->second;
      SURGEON_EXPECTS(existing.dim() == dim && existing.has_bias() == options.bias &&
                          existing.options().ema_decay == options.ema_decay,
                      "factor_bank::define: key '{}' already holds a factor of dimension {}", key,
                      existing.dim());
      return it->second;
    }
    return factors_.emplace(key, factor_accumulator<T>(dim, options)).first->second;
  }

  /// @brief Makes `layer` read its factor from `key` (which must be defined).
  /// @throws logic_error if `key` is unknown or `layer` is bound to another key.
  void bind(const std::string& layer, const std::string& key) {
    SURGEON_EXPECTS(factors_.count(key) == 1, "factor_bank::bind: unknown key '{}' for layer '{}'", key,
                    layer);
    const auto [it, inserted] = bindings_.emplace(layer, key);
    SURGEON_EXPECTS(inserted || it->second == key, "factor_bank::bind: layer '{}' is already bound to '{}'",
                    layer, it->second);
  }

  /// @brief True when an accumulator named `key` is defined. O(log keys).
  bool contains(const std::string& key) const { return factors_.count(key) == 1; }
  /// @brief Number of defined accumulators (keys). O(1).
  std::size_t size() const { return factors_.size(); }

  /// @brief The accumulator of `key`. @throws logic_error if unknown.
  factor_accumulator<T>& at(const std::string& key) {
    const auto it = factors_.find(key);
    SURGEON_EXPECTS(it != factors_.end(), "factor_bank: unknown key '{}'", key);
    return it->second;
  }
  /// @brief The accumulator of `key`, read-only. @throws logic_error if unknown.
  const factor_accumulator<T>& at(const std::string& key) const {
    const auto it = factors_.find(key);
    SURGEON_EXPECTS(it != factors_.end(), "factor_bank: unknown key '{}'", key);
    return it->second;
  }

  /// @brief The key a layer is bound to. @throws logic_error if the layer is unbound.
  const std::string& key_of(const std::string& layer) const {
    const auto it = bindings_.find(layer);
    SURGEON_EXPECTS(it != bindings_.end(), "factor_bank: layer '{}' is not bound to a factor", layer);
    return it->second;
  }

  /// @brief The accumulator a layer reads. @throws logic_error if the layer is unbound.
  const factor_accumulator<T>& for_layer(const std::string& layer) const { return at(key_of(layer)); }

  /// @brief Feeds `x` to the accumulator `key`. @throws as `factor_accumulator::add`.
  template <typename Context, typename View>
  void add(Context& ctx, const std::string& key, View x) {
    at(key).add(ctx, x);
  }

  /// @brief Merges every accumulator of `other` into the one of the same key.
  /// @throws logic_error if the key sets or shapes differ.
  void merge(const factor_bank& other) {
    SURGEON_EXPECTS(other.factors_.size() == factors_.size(), "factor_bank::merge: {} keys vs {}",
                    other.factors_.size(), factors_.size());
    for (const auto& [key, factor] : other.factors_) at(key).merge(factor);
  }

  /// @brief Forgets every token in every accumulator (keeps keys and bindings).
  void reset() {
    for (auto& entry : factors_) entry.second.reset();
  }

  /// @brief Removes the accumulator `key` and frees its state (no-op when it is not defined). A
  /// layer still bound to it then fails in `for_layer`. O(log keys).
  void erase(const std::string& key) { factors_.erase(key); }

  /// @brief Every accumulator, by key. O(1).
  const std::map<std::string, factor_accumulator<T>>& factors() const { return factors_; }
  /// @brief Every binding, layer name to key. O(1).
  const std::map<std::string, std::string>& bindings() const { return bindings_; }

  /// @brief Writes every accumulator and binding to one safetensors file: tensor `<key>` with
  /// metadata prefixed `<key>.` (see `factor_accumulator::to_safetensors`), plus
  /// `surgeon.bank.keys` (newline-separated) and `surgeon.bank.bind.<layer>` = key.
  /// @throws io_error if the file cannot be written.
  void save(const std::string& path) const {
    io::safetensors_writer writer;
    std::string keys;
    for (const auto& [key, factor] : factors_) {
      SURGEON_EXPECTS(key.find('\n') == std::string::npos, "factor_bank::save: key with a newline");
      factor.to_safetensors(writer, key, key + ".");
      keys += keys.empty() ? key : "\n" + key;
    }
    writer.set_metadata("surgeon.bank.keys", keys);
    for (const auto& [layer, key] : bindings_) writer.set_metadata("surgeon.bank.bind." + layer, key);
    writer.write(path);
  }

  /// @brief Reads a bank written by `save`.
  /// @throws io_error if the file is missing, truncated or inconsistent.
  static factor_bank load(const std::string& path) {
    const io::safetensors_reader reader = io::safetensors_reader::open(path);
    const auto& meta = reader.metadata();
    const auto keys_it = meta.find("surgeon.bank.keys");
    if (keys_it == meta.end()) SURGEON_THROW(io_error, "{}: not a surgeon factor bank (no key list)", path);
    factor_bank bank;
    std::size_t start = 0;
    const std::string& keys = keys_it->second;
    while (!keys.empty() && start <= keys.size()) {
      const std::size_t stop = std::min(keys.find('\n', start), keys.size());
      const std::string key = keys.substr(start, stop - start);
      if (key.empty() || bank.factors_.count(key) != 0) SURGEON_THROW(io_error, "{}: bad key list", path);
      bank.factors_.emplace(key, factor_accumulator<T>::from_safetensors(reader, key, key + ".", path));
      start = stop + 1;
    }
    const std::string bind_prefix = "surgeon.bank.bind.";
    for (const auto& [name, value] : meta) {
      if (name.compare(0, bind_prefix.size(), bind_prefix) != 0) continue;
      if (bank.factors_.count(value) == 0)
        SURGEON_THROW(io_error, "{}: binding to unknown key '{}'", path, value);
      bank.bindings_.emplace(name.substr(bind_prefix.size()), value);
    }
    return bank;
  }

 private:
  std::map<std::string, factor_accumulator<T>> factors_;
  std::map<std::string, std::string> bindings_;
};

}  // namespace surgeon

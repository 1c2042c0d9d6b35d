// Consumer of the installed package: accumulates a factor and inverts it.
#include <surgeon/surgeon.hpp>

#include <cstdio>
#include <vector>

int main() {
  surgeon::cpu::context cpu;
  surgeon::factor_accumulator<double> a(3);
  const std::vector<float> x = {1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 1, 1};
  a.add(cpu, surgeon::make_host_matrix_view(x, 4, 3));
  const auto mean = a.mean();
  const auto damped = surgeon::cpu::damp_and_invert(cpu, mean.view(), 0.01, surgeon::damping{});
  std::printf("surgeon %s: count=%lld A11=%.4f inv00=%.4f\n", surgeon::version_string,
              static_cast<long long>(a.count()), mean(1, 1), damped.inverse()(0, 0));
  return a.count() == 4 && mean(1, 1) == 1.25 ? 0 : 1;
}

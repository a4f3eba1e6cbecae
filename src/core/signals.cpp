#include "clipper/core/signals.hpp"

#include <csignal>
#include <initializer_list>

namespace clipper::core {
namespace {
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop = sig;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
}

int stop_signal() {
  return g_stop;
}
void request_stop(int signal_number) {
  g_stop = signal_number;
}
void clear_stop() {
  g_stop = 0;
}

}  // namespace clipper::core

// embed.cpp: libfree from C++ with RAII (examples/free.hpp). Streams a completion with
// FREE early exit, then continues the same context with free_step one token at a time, and
// shows how a libfree error arrives as an exception.
//
//     embed-cpp [MODEL.gguf] [PROMPT] [N_TOKENS]
#include "free.hpp"

#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char **argv)
{
    const std::string path = argc > 1 ? argv[1] : "models/free-llama-22M.gguf";
    const std::string prompt = argc > 2 ? argv[2] : "The President shall";
    const int n_tokens = argc > 3 ? std::atoi(argv[3]) : 48;

    try {
        libfree::Model model(path);
        std::cout << "model: " << model.describe() << "\n";

        libfree::ContextParams params;
        params->exit_mode = FREE_EXIT_FREE;
        params->threshold = 0.5f;
        libfree::Context ctx(model, params);

        std::cout << prompt;
        int early = 0;
        int32_t produced = ctx.decode(prompt, n_tokens,
                                      [&](std::string_view piece, const free_step_info &info) {
                                          early += info.early_exit ? 1 : 0;
                                          std::cout << piece << std::flush;
                                          return true;
                                      });
        std::cout << "\n";

        // The same stream, continued token by token: step() gives ids, the model turns
        // them back into text.
        std::vector<int32_t> more;
        for (int i = 0; i < 8; i++) {
            free_step_info info;
            int32_t t = ctx.step(&info);
            if (info.is_eos)
                break;
            more.push_back(t);
        }
        std::cout << "then: " << model.detokenize(more) << "\n";

        free_stats st = ctx.stats();
        std::cout << "stats: " << produced << " streamed tokens (" << early
                  << " early exits), " << st.tokens << " in all, "
                  << (st.decode_ms > 0 ? double(st.tokens) * 1e3 / st.decode_ms : 0.0)
                  << " tokens/s, " << st.avg_layers_per_token << " of " << st.n_layers
                  << " layers per token\n";

        // An out-of-range parameter: the message says exactly what was wrong.
        try {
            libfree::ContextParams bad;
            bad->top_p = 2.0f;
            ctx.set_params(bad);
        } catch (const libfree::Error &e) {
            std::cout << "expected error: " << e.what() << " (status " << e.status() << ")\n";
        }
    } catch (const libfree::Error &e) {
        std::cerr << "embed-cpp: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

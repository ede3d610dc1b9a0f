// free.hpp: a small header-only C++17 wrapper over the libfree C API (free/free.h).
//
// Optional: C programs use free/free.h directly; this header only adds ownership (RAII),
// exceptions and std::string / std::function conveniences on top of it.
//
//     libfree::Model model("models/free-llama-22M.gguf");
//     libfree::ContextParams p;
//     p->exit_mode = FREE_EXIT_FREE;
//     libfree::Context ctx(model, p);
//     ctx.decode("Once upon a time", 64, [](std::string_view piece, const free_step_info &) {
//         std::cout << piece << std::flush;
//         return true;                         // false stops the generation
//     });
//
// Errors become libfree::Error (a std::runtime_error) whose what() is the detailed
// message and status() the free_status. A Context shares ownership of its model, so the
// C rule "destroy contexts before their model" holds whatever order C++ destroys them in.
// Threading is the C library's: a Model may be used from any number of threads, a
// Context from one thread at a time.
#ifndef LIBFREE_FREE_HPP
#define LIBFREE_FREE_HPP

#include <free/free.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace libfree {

class Error : public std::runtime_error {
public:
    Error(free_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    free_status status() const noexcept { return status_; }

private:
    free_status status_;
};

namespace detail {

// Throws for a failed model-level call: the thread's last error has the detail.
inline void check(free_status s)
{
    if (s != FREE_OK)
        throw Error(s, std::string(free_strerror(s)) + ": " + free_last_error());
}

inline void check(free_status s, const free_ctx *ctx)
{
    if (s != FREE_OK)
        throw Error(s, std::string(free_strerror(s)) + ": " + free_ctx_last_error(ctx));
}

struct ModelDeleter {
    void operator()(free_model *m) const noexcept { free_model_destroy(m); }
};
struct CtxDeleter {
    void operator()(free_ctx *c) const noexcept { free_ctx_destroy(c); }
};

} // namespace detail

// free_ctx_params with the library's defaults; use -> to reach the C fields.
class ContextParams {
public:
    ContextParams() { free_ctx_params_init(&p_, sizeof p_); }
    free_ctx_params *operator->() noexcept { return &p_; }
    const free_ctx_params *operator->() const noexcept { return &p_; }
    const free_ctx_params *get() const noexcept { return &p_; }

private:
    free_ctx_params p_;
};

class Model {
public:
    explicit Model(const std::string &path, bool vocab_only = false)
    {
        free_model_params p;
        free_model_params_init(&p, sizeof p);
        p.vocab_only = vocab_only ? 1 : 0;
        free_model *m = nullptr;
        detail::check(free_model_load(path.c_str(), &p, &m));
        model_.reset(m, detail::ModelDeleter());
    }

    free_model *get() const noexcept { return model_.get(); }
    int32_t n_layers() const noexcept { return free_model_n_layers(get()); }
    int32_t exit_layer() const noexcept { return free_model_exit_layer(get()); }
    int32_t n_vocab() const noexcept { return free_model_n_vocab(get()); }
    int32_t n_ctx_train() const noexcept { return free_model_n_ctx_train(get()); }
    std::string describe() const { return free_model_describe(get()); }

    std::vector<int32_t> tokenize(std::string_view text, bool add_bos = true) const
    {
        std::vector<int32_t> ids(text.size() + 2);
        size_t n = 0;
        free_status s = free_tokenize(get(), text.data(), static_cast<ptrdiff_t>(text.size()),
                                      add_bos, ids.data(), ids.size(), &n);
        if (s == FREE_ERR_BUFFER_TOO_SMALL) {
            ids.resize(n);
            s = free_tokenize(get(), text.data(), static_cast<ptrdiff_t>(text.size()),
                              add_bos, ids.data(), ids.size(), &n);
        }
        detail::check(s);
        ids.resize(n);
        return ids;
    }

    std::string detokenize(const std::vector<int32_t> &ids) const
    {
        size_t n = 0;
        free_status s = free_detokenize(get(), ids.data(), ids.size(), nullptr, 0, &n);
        if (s != FREE_ERR_BUFFER_TOO_SMALL)
            detail::check(s);
        std::string text(n + 1, '\0');
        detail::check(free_detokenize(get(), ids.data(), ids.size(), &text[0], text.size(),
                                      &n));
        text.resize(n);
        return text;
    }

private:
    friend class Context;
    std::shared_ptr<free_model> model_;
};

// One decoding stream. Movable, not copyable.
class Context {
public:
    // Called per produced token; return false to stop.
    using TokenFn = std::function<bool(std::string_view piece, const free_step_info &info)>;

    Context(const Model &model, const ContextParams &params = ContextParams())
        : model_(model.model_)
    {
        free_ctx *c = nullptr;
        detail::check(free_ctx_create(model_.get(), params.get(), &c));
        ctx_.reset(c);
    }

    free_ctx *get() const noexcept { return ctx_.get(); }

    void set_params(const ContextParams &params)
    {
        detail::check(free_ctx_set_params(get(), params.get()), get());
    }
    void reset() { detail::check(free_ctx_reset(get()), get()); }
    int32_t n_past() const noexcept { return free_ctx_n_past(get()); }

    void prefill(const std::vector<int32_t> &tokens)
    {
        detail::check(free_prefill(get(), tokens.data(), tokens.size()), get());
    }

    // The next token; info (optional) says how it was produced.
    int32_t step(free_step_info *info = nullptr)
    {
        if (info)
            info->size = sizeof *info;
        int32_t token = 0;
        detail::check(free_step(get(), &token, info), get());
        return token;
    }

    // Streams a completion of prompt (empty: continue) and returns the tokens produced.
    // An exception thrown by fn stops the generation and is rethrown here.
    int32_t decode(std::string_view prompt, int32_t max_tokens, const TokenFn &fn = nullptr)
    {
        Call call{&fn, 0, nullptr};
        free_status s = free_decode(get(), prompt.data(), static_cast<ptrdiff_t>(prompt.size()),
                                    max_tokens, trampoline, &call);
        if (call.error)
            std::rethrow_exception(call.error);
        detail::check(s, get());
        return call.count;
    }

    free_stats stats() const
    {
        free_stats st{};
        st.size = sizeof st;
        detail::check(free_ctx_stats(get(), &st), get());
        return st;
    }
    void reset_stats() { detail::check(free_ctx_reset_stats(get()), get()); }

private:
    struct Call {
        const TokenFn *fn;
        int32_t count;
        std::exception_ptr error;
    };

    // C cannot unwind C++ exceptions: catch them here and stop the generation instead.
    static int trampoline(void *user, int32_t, const char *piece, size_t len,
                          const free_step_info *info)
    {
        Call *call = static_cast<Call *>(user);
        call->count++;
        if (!*call->fn)
            return 0;
        try {
            return (*call->fn)(std::string_view(piece, len), *info) ? 0 : 1;
        } catch (...) {
            call->error = std::current_exception();
            return 1;
        }
    }

    std::shared_ptr<free_model> model_; // declared first: destroyed after ctx_
    std::unique_ptr<free_ctx, detail::CtxDeleter> ctx_;
};

} // namespace libfree

#endif

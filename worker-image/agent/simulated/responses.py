"""What the simulated engine sends: vLLM 0.32's bodies, chunks and errors.

Bodies are assembled from pre-encoded pieces around the few values that
change per request (id, time, text, counts), so a response costs string
concatenation, not a JSON serialisation. Keys and order follow
tests/fixtures/vllm-0.32.0.
"""

import json
from dataclasses import dataclass

VLLM_VERSION = "0.32.0"

ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."


def error_body(message: str, kind: str, code: int, param: str | None = None) -> bytes:
    """vLLM's error shape: {"error": {"message", "type", "param", "code"}}."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}},
        separators=(",", ":"),
    ).encode()


ENGINE_DEAD_BODY = error_body(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)
INJECTED_ERROR_BODY = error_body(
    "simulated engine error (fault injection: errorRate)", "InternalServerError", 500
)


def json_invalid_error(position: int, reason: str) -> bytes:
    """A body that is not JSON, worded as vLLM's request validation words it."""
    detail = (
        f"{{'type': 'json_invalid', 'loc': 'body.{position}', 'msg': 'JSON decode error', "
        f"'input': '<dict of 0 items>', 'ctx': {{'error': {reason!r}}}}}"
    )
    return error_body(f"1 validation error:\n  {detail}", "Bad Request", 400, f"body.{position}")


def missing_field_error(field: str, given: int) -> bytes:
    detail = (
        f"{{'type': 'missing', 'loc': 'body.{field}', 'msg': 'Field required', "
        f"'input': '<dict of {given} items>'}}"
    )
    return error_body(f"1 validation error:\n  {detail}", "Bad Request", 400, f"body.{field}")


def invalid_field_error(field: str, message: str) -> bytes:
    detail = f"{{'type': 'value_error', 'loc': 'body.{field}', 'msg': {message!r}}}"
    return error_body(f"1 validation error:\n  {detail}", "Bad Request", 400, f"body.{field}")


def bad_request(message: str, param: str | None) -> bytes:
    return error_body(message, "BadRequestError", 400, param)


def unknown_model_error(model: str, served: str) -> bytes:
    message = f"The model `{model}` does not exist. Valid aliases: {served}."
    return error_body(message, "NotFoundError", 404, "model")


def _js(value: str) -> str:
    return json.dumps(value)


@dataclass(frozen=True)
class Templates:
    """Pre-encoded pieces for one served model."""

    model_json: str
    fingerprint: str

    # --- non-streaming ------------------------------------------------------

    def completion(
        self, rid: str, created: int, text: str, finish: str, prompt: int, completion: int
    ) -> bytes:
        return (
            f'{{"id":"cmpl-{rid}","object":"text_completion","created":{created},'
            f'"model":{self.model_json},"choices":[{{"index":0,"text":"{text}",'
            f'"logprobs":null,"finish_reason":"{finish}","stop_reason":null,'
            f'"token_ids":null,"prompt_logprobs":null,"prompt_token_ids":null,'
            f'"routed_experts":null}}],"service_tier":null,'
            f'"system_fingerprint":"{self.fingerprint}",'
            f'"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt + completion},'
            f'"completion_tokens":{completion},"prompt_tokens_details":null,'
            f'"completion_tokens_details":null}},"kv_transfer_params":null,'
            f'"ec_transfer_params":null,"metrics":null}}'
        ).encode()

    def chat(
        self, rid: str, created: int, text: str, finish: str, prompt: int, completion: int
    ) -> bytes:
        return (
            f'{{"id":"chatcmpl-{rid}","object":"chat.completion","created":{created},'
            f'"model":{self.model_json},"choices":[{{"index":0,"message":{{'
            f'"role":"assistant","content":"{text}","refusal":null,"annotations":null,'
            f'"audio":null,"function_call":null,"reasoning":null}},"logprobs":null,'
            f'"finish_reason":"{finish}","stop_reason":null,"token_ids":null,'
            f'"routed_experts":null}}],"service_tier":null,'
            f'"system_fingerprint":"{self.fingerprint}",'
            f'"usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt + completion},'
            f'"completion_tokens":{completion},"prompt_tokens_details":null,'
            f'"completion_tokens_details":null}},"prompt_logprobs":null,'
            f'"prompt_token_ids":null,"prompt_text":null,"kv_transfer_params":null,'
            f'"ec_transfer_params":null,"metrics":null}}'
        ).encode()

    # --- streaming ------------------------------------------------------------

    def stream(self, chat: bool, rid: str, created: int) -> "StreamPieces":
        """The byte pieces of one stream; a token chunk is head + token + tail."""
        if chat:
            head = (
                f'data: {{"id":"chatcmpl-{rid}","object":"chat.completion.chunk",'
                f'"created":{created},"model":{self.model_json},"choices":[{{"index":0,'
            )
            first = (
                head + '"delta":{"role":"assistant","content":""},"logprobs":null,'
                '"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}\n\n'
            )
            token_head = head + '"delta":{"content":"'
            token_tail = '"},"logprobs":null,"finish_reason":null,"token_ids":null}]}\n\n'
            final_tail = '"},"logprobs":null,"finish_reason":"{finish}","stop_reason":null,'
            final_tail += '"token_ids":null}]}\n\n'
            abort = (
                head + '"delta":{"content":""},"logprobs":null,"finish_reason":"abort",'
                f'"stop_reason":null,"token_ids":null}}],'
                f'"system_fingerprint":"{self.fingerprint}"}}\n\n'
            )
            usage_head = (
                f'data: {{"id":"chatcmpl-{rid}","object":"chat.completion.chunk",'
                f'"created":{created},"model":{self.model_json},"choices":[],'
            )
        else:
            head = (
                f'data: {{"id":"cmpl-{rid}","object":"text_completion",'
                f'"created":{created},"model":{self.model_json},"choices":[{{"index":0,'
            )
            first = ""
            token_head = head + '"text":"'
            token_tail = (
                '","logprobs":null,"finish_reason":null,"stop_reason":null,'
                '"prompt_token_ids":null,"token_ids":null}]}\n\n'
            )
            final_tail = (
                '","logprobs":null,"finish_reason":"{finish}","stop_reason":null,'
                '"prompt_token_ids":null,"token_ids":null}]}\n\n'
            )
            abort = (
                head + '"text":"","logprobs":null,"finish_reason":"abort","stop_reason":null,'
                '"prompt_token_ids":null,"token_ids":null}],'
                f'"system_fingerprint":"{self.fingerprint}"}}\n\n'
            )
            usage_head = (
                f'data: {{"id":"cmpl-{rid}","object":"text_completion",'
                f'"created":{created},"model":{self.model_json},"choices":[],'
            )
        return StreamPieces(
            first=first.encode(),
            token_head=token_head.encode(),
            token_tail=token_tail.encode(),
            final_tail=final_tail,
            abort=abort.encode(),
            usage_head=usage_head,
            fingerprint=self.fingerprint,
        )


@dataclass(frozen=True)
class StreamPieces:
    first: bytes
    token_head: bytes
    token_tail: bytes
    final_tail: str  # has a {finish} placeholder
    abort: bytes
    usage_head: str
    fingerprint: str

    def final(self, finish: str) -> bytes:
        return self.final_tail.replace("{finish}", finish).encode()

    def usage(self, prompt: int, completion: int) -> bytes:
        return (
            f'{self.usage_head}"usage":{{"prompt_tokens":{prompt},'
            f'"total_tokens":{prompt + completion},"completion_tokens":{completion}}},'
            f'"system_fingerprint":"{self.fingerprint}"}}\n\n'
        ).encode()


DONE = b"data: [DONE]\n\n"


def stream_error(message: str, kind: str, code: int) -> bytes:
    """An error inside a started stream, as vLLM's stream generators send it.

    vLLM serialises this one with json.dumps' default separators (spaces
    after `:` and `,`), unlike its bodies; recorded in engine_death.json.
    """
    error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return b"data: " + json.dumps(error).encode() + b"\n\n" + DONE


ENGINE_DEAD_STREAM_END = stream_error(ENGINE_DEAD_MESSAGE, "InternalServerError", 500)


def models_body(model: str, root: str, max_model_len: int, created: int, perm_id: str) -> bytes:
    return json.dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": root,
                    "parent": None,
                    "max_model_len": max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{perm_id}",
                            "object": "model_permission",
                            "created": created,
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
            ],
        },
        separators=(",", ":"),
    ).encode()

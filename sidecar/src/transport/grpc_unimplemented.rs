//! The methods of `dapr.proto.runtime.v1.Dapr` this sidecar does not serve: each answers
//! `Unimplemented`, as daprd does for a building block it has no component for.
//! Written out by a macro from a list, because the generated trait has no default bodies.

/// Expands, inside `impl Dapr for ...`, to one method per entry that answers Unimplemented.
/// Entries copy the generated trait's signatures: `name(Request) -> Response;`.
macro_rules! unimplemented_methods {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            // Written in the form `#[async_trait]` expands to: that attribute runs before
            // this macro, so it cannot rewrite `async fn`s this macro produces.
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _request: tonic::Request<$req>,
            ) -> ::std::pin::Pin<Box<
                dyn ::std::future::Future<Output = Result<tonic::Response<$resp>, tonic::Status>>
                    + Send
                    + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    Err(tonic::Status::unimplemented(concat!(
                        "this sidecar does not implement ",
                        stringify!($name)
                    )))
                })
            }
        )*
    };
}

/// Streaming responses of the methods above; never produced.
pub type NeverStream<T> = tonic::codegen::BoxStream<T>;

macro_rules! dapr_unimplemented {
    () => {
        type SubscribeConfigurationAlpha1Stream = $crate::transport::grpc_unimplemented::NeverStream<SubscribeConfigurationResponse>;
        type SubscribeConfigurationStream = $crate::transport::grpc_unimplemented::NeverStream<SubscribeConfigurationResponse>;
        type EncryptAlpha1Stream = $crate::transport::grpc_unimplemented::NeverStream<EncryptResponse>;
        type DecryptAlpha1Stream = $crate::transport::grpc_unimplemented::NeverStream<DecryptResponse>;

        unimplemented_methods! {
            query_state_alpha1(QueryStateRequest) -> QueryStateResponse;
            invoke_binding(InvokeBindingRequest) -> InvokeBindingResponse;
            get_secret(GetSecretRequest) -> GetSecretResponse;
            get_bulk_secret(GetBulkSecretRequest) -> GetBulkSecretResponse;
            register_actor_timer(RegisterActorTimerRequest) -> ();
            unregister_actor_timer(UnregisterActorTimerRequest) -> ();
            register_actor_reminder(RegisterActorReminderRequest) -> ();
            unregister_actor_reminder(UnregisterActorReminderRequest) -> ();
            unregister_actor_reminders_by_type(UnregisterActorRemindersByTypeRequest) -> UnregisterActorRemindersByTypeResponse;
            list_actor_reminders(ListActorRemindersRequest) -> ListActorRemindersResponse;
            get_actor_state(GetActorStateRequest) -> GetActorStateResponse;
            get_actor_reminder(GetActorReminderRequest) -> GetActorReminderResponse;
            execute_actor_state_transaction(ExecuteActorStateTransactionRequest) -> ();
            invoke_actor(InvokeActorRequest) -> InvokeActorResponse;
            get_configuration_alpha1(GetConfigurationRequest) -> GetConfigurationResponse;
            get_configuration(GetConfigurationRequest) -> GetConfigurationResponse;
            subscribe_configuration_alpha1(SubscribeConfigurationRequest) -> Self::SubscribeConfigurationAlpha1Stream;
            subscribe_configuration(SubscribeConfigurationRequest) -> Self::SubscribeConfigurationStream;
            unsubscribe_configuration_alpha1(UnsubscribeConfigurationRequest) -> UnsubscribeConfigurationResponse;
            unsubscribe_configuration(UnsubscribeConfigurationRequest) -> UnsubscribeConfigurationResponse;
            encrypt_alpha1(tonic::Streaming<EncryptRequest>) -> Self::EncryptAlpha1Stream;
            decrypt_alpha1(tonic::Streaming<DecryptRequest>) -> Self::DecryptAlpha1Stream;
            subtle_get_key_alpha1(SubtleGetKeyRequest) -> SubtleGetKeyResponse;
            subtle_encrypt_alpha1(SubtleEncryptRequest) -> SubtleEncryptResponse;
            subtle_decrypt_alpha1(SubtleDecryptRequest) -> SubtleDecryptResponse;
            subtle_wrap_key_alpha1(SubtleWrapKeyRequest) -> SubtleWrapKeyResponse;
            subtle_unwrap_key_alpha1(SubtleUnwrapKeyRequest) -> SubtleUnwrapKeyResponse;
            subtle_sign_alpha1(SubtleSignRequest) -> SubtleSignResponse;
            subtle_verify_alpha1(SubtleVerifyRequest) -> SubtleVerifyResponse;
            start_workflow_alpha1(StartWorkflowRequest) -> StartWorkflowResponse;
            get_workflow_alpha1(GetWorkflowRequest) -> GetWorkflowResponse;
            purge_workflow_alpha1(PurgeWorkflowRequest) -> ();
            terminate_workflow_alpha1(TerminateWorkflowRequest) -> ();
            pause_workflow_alpha1(PauseWorkflowRequest) -> ();
            resume_workflow_alpha1(ResumeWorkflowRequest) -> ();
            raise_event_workflow_alpha1(RaiseEventWorkflowRequest) -> ();
            start_workflow_beta1(StartWorkflowRequest) -> StartWorkflowResponse;
            get_workflow_beta1(GetWorkflowRequest) -> GetWorkflowResponse;
            purge_workflow_beta1(PurgeWorkflowRequest) -> ();
            terminate_workflow_beta1(TerminateWorkflowRequest) -> ();
            pause_workflow_beta1(PauseWorkflowRequest) -> ();
            resume_workflow_beta1(ResumeWorkflowRequest) -> ();
            raise_event_workflow_beta1(RaiseEventWorkflowRequest) -> ();
            schedule_job_alpha1(ScheduleJobRequest) -> ScheduleJobResponse;
            schedule_job(ScheduleJobRequest) -> ScheduleJobResponse;
            get_job_alpha1(GetJobRequest) -> GetJobResponse;
            get_job(GetJobRequest) -> GetJobResponse;
            delete_job_alpha1(DeleteJobRequest) -> DeleteJobResponse;
            delete_job(DeleteJobRequest) -> DeleteJobResponse;
            delete_jobs_by_prefix_alpha1(DeleteJobsByPrefixRequestAlpha1) -> DeleteJobsByPrefixResponseAlpha1;
            delete_jobs_by_prefix(DeleteJobsByPrefixRequest) -> DeleteJobsByPrefixResponse;
            list_jobs_alpha1(ListJobsRequestAlpha1) -> ListJobsResponseAlpha1;
            list_jobs(ListJobsRequest) -> ListJobsResponse;
            converse_alpha1(ConversationRequest) -> ConversationResponse;
            converse_alpha2(ConversationRequestAlpha2) -> ConversationResponseAlpha2;
            create_index_alpha1(CreateIndexRequestAlpha1) -> ();
            get_index_alpha1(GetIndexRequestAlpha1) -> GetIndexResponseAlpha1;
            list_indexes_alpha1(ListIndexesRequestAlpha1) -> ListIndexesResponseAlpha1;
            delete_index_alpha1(DeleteIndexRequestAlpha1) -> ();
            index_documents_alpha1(IndexDocumentsRequestAlpha1) -> IndexDocumentsResponseAlpha1;
            get_documents_alpha1(GetDocumentsRequestAlpha1) -> GetDocumentsResponseAlpha1;
            delete_documents_alpha1(DeleteDocumentsRequestAlpha1) -> DeleteDocumentsResponseAlpha1;
            search_alpha1(SearchRequestAlpha1) -> SearchResponseAlpha1;
            create_collection_alpha1(CreateCollectionRequestAlpha1) -> ();
            get_collection_alpha1(GetCollectionRequestAlpha1) -> GetCollectionResponseAlpha1;
            list_collections_alpha1(ListCollectionsRequestAlpha1) -> ListCollectionsResponseAlpha1;
            delete_collection_alpha1(DeleteCollectionRequestAlpha1) -> ();
            upsert_vectors_alpha1(UpsertVectorsRequestAlpha1) -> UpsertVectorsResponseAlpha1;
            delete_vectors_alpha1(DeleteVectorsRequestAlpha1) -> DeleteVectorsResponseAlpha1;
            get_vectors_alpha1(GetVectorsRequestAlpha1) -> GetVectorsResponseAlpha1;
            query_vectors_alpha1(QueryVectorsRequestAlpha1) -> QueryVectorsResponseAlpha1;
            batch_query_vectors_alpha1(BatchQueryVectorsRequestAlpha1) -> BatchQueryVectorsResponseAlpha1;
        }
    };
}

pub(crate) use {dapr_unimplemented, unimplemented_methods};

// Every role assignment of the deployment, in one place. The app's identity always gets
// them; the developer who runs azd gets the same ones when grantUserRoles is on, so a local
// run and the admin CLI can reach the deployed storage, Cosmos DB and Azure OpenAI.
// Each assignment is named guid(scope, principal, role), so re-provisioning is idempotent.
param storageAccountName string
param cosmosAccountName string
param openAiPrimaryName string
param openAiSecondaryName string
param applicationInsightsName string
param keyVaultName string
@description('The Content Safety account, when one is deployed; empty for none.')
param contentSafetyName string = ''
@description('Principal id of the user-assigned identity the Function App runs as.')
param appPrincipalId string
@description('Object id of the developer running azd; empty for none.')
param userPrincipalId string = ''
@allowed(['User', 'ServicePrincipal'])
param userPrincipalType string = 'User'
param grantUserRoles bool = true

// Built-in role definition ids (the same in every tenant).
var roles = {
  // Flex Consumption deployment package, host keys and timer leases.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // The gateway's tables, and the host's diagnostic events.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  cognitiveServicesOpenAIUser: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
  // Entra-authenticated telemetry ingestion (despite its name, all telemetry).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // The admin key's Key Vault reference.
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // Content Safety's text:shieldPrompt and text:analyze with an Entra token.
  cognitiveServicesUser: 'a97b65f3-24c7-4388-baec-2e87135dc908'
}
// Cosmos DB data-plane role: Cosmos DB Built-in Data Contributor.
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

var appPrincipals = [
  {
    id: appPrincipalId
    type: 'ServicePrincipal'
  }
]
var userPrincipals = (grantUserRoles && !empty(userPrincipalId)) ? [{ id: userPrincipalId, type: userPrincipalType }] : []
var principals = concat(appPrincipals, userPrincipals)
// An optional account's assignments loop over no one when it is not deployed.
var hasContentSafety = !empty(contentSafetyName)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource openAiPrimary 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiPrimaryName
}

resource openAiSecondary 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiSecondaryName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Named even when none is deployed: the assignments below are skipped then, but their names are still computed.
resource contentSafety 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: empty(contentSafetyName) ? 'none' : contentSafetyName
}

resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(storage.id, p.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: p.id
    principalType: p.type
  }
}]

resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(storage.id, p.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: p.id
    principalType: p.type
  }
}]

resource openAiPrimaryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(openAiPrimary.id, p.id, roles.cognitiveServicesOpenAIUser)
  scope: openAiPrimary
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesOpenAIUser)
    principalId: p.id
    principalType: p.type
  }
}]

resource openAiSecondaryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(openAiSecondary.id, p.id, roles.cognitiveServicesOpenAIUser)
  scope: openAiSecondary
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesOpenAIUser)
    principalId: p.id
    principalType: p.type
  }
}]

resource monitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(appInsights.id, p.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: p.id
    principalType: p.type
  }
}]

resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in principals: {
  name: guid(vault.id, p.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: p.id
    principalType: p.type
  }
}]

resource contentSafetyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in (hasContentSafety ? principals : []): {
  name: guid(contentSafety.id, p.id, roles.cognitiveServicesUser)
  scope: contentSafety
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesUser)
    principalId: p.id
    principalType: p.type
  }
}]

resource cosmosDataContributorAssignment 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = [for p in principals: {
  parent: cosmos
  name: guid(cosmos.id, p.id, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: p.id
    scope: cosmos.id
  }
}]
